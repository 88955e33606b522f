# Fig. 8: how the target-guided round depends on Eq. 5's alpha and mu and on k. Every trained setting is
# one target-guided round from round 0 with round 0's S_k (its k most uncertain classes for the k sweep),
# over every seed of ablation.seeds; the draw statistics cover the whole alpha x mu grid without training.


rule weights_sensitivity:
    input:
        class_stats=rules.class_stats.output[0],
        rank=lambda w: f"{seed_dir(w.seed)}/rank/{R0}.csv",
    output:
        f"{EXP}/seed{{seed}}/weights/{{sens_model}}.csv",
    wildcard_constraints:
        sens_model=SENS_MODEL_PATTERN,
    params:
        cmd=uncerda("weights"),
        flags=lambda w: sens_weight_flags(w.sens_model),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/weights_{{sens_model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/weights_{{sens_model}}.tsv"
    shell:
        "{params.cmd} --class-stats {input.class_stats:q} --rank {input.rank:q} {params.flags}"
        " --out {output:q} > {log:q} 2>&1"


rule adapt_sensitivity:
    """One target-guided round from round 0 with one setting's weights."""
    input:
        **TRAIN_INPUT,
        init=lambda w: model_ckpt(R0, w.seed),
        weights=f"{EXP}/seed{{seed}}/weights/{{sens_model}}.csv",
        rank=lambda w: f"{seed_dir(w.seed)}/rank/{R0}.csv",
        class_stats=rules.class_stats.output[0],
    output:
        ckpt=f"{MODELS}/{{sens_model}}/checkpoint.pt",
        losses=f"{MODELS}/{{sens_model}}/losses.csv",
    wildcard_constraints:
        sens_model=SENS_MODEL_PATTERN,
    params:
        cmd=uncerda("adapt", config_json=True, train=True),
        settings=settings("model", "train", "source", "target", "adapt", "tgaa", omit=("tgaa.max_rounds",)),
        k=lambda w: f"--k {w.sens_model[len('sens_k'):]}" if w.sens_model.startswith("sens_k") else "",
        **SELECTION_PARAMS,
    threads: threads_of("train")
    resources:
        **res("train"),
    log:
        f"{LOGS}/seed{{seed}}/adapt_{{sens_model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/adapt_{{sens_model}}.tsv"
    shell:
        "{params.cmd} --seed {wildcards.seed} --init {input.init:q}"
        " --weights {input.weights:q} --rank {input.rank:q} {params.k} --class-stats {input.class_stats:q}"
        " --source-index {input.source_index:q} --target-index {input.target_index:q}"
        " --out {output.ckpt:q} --losses {output.losses:q} > {log:q} 2>&1"


rule sensitivity_tables:
    input:
        class_stats=rules.class_stats.output[0],
        ranks=[f"{seed_dir(seed)}/rank/{R0}.csv" for seed in ABL_SEEDS],
        evals=sorted({f"{seed_dir(seed)}/eval/{model}.json" for _, model in sens_settings() for seed in ABL_SEEDS}),
    output:
        draws=report(f"{SENS_DIR}/sensitivity_draws.csv", caption="../report/sensitivity.rst", category="Ablation"),
        draws_md=f"{SENS_DIR}/sensitivity_draws.md",
        table=f"{SENS_DIR}/sensitivity.csv",
        md=f"{SENS_DIR}/sensitivity.md",
        figure=report(SENS_FIGURE, caption="../report/sensitivity.rst", category="Ablation"),
    params:
        cmd=uncerda("sensitivity"),
        ranks=" ".join(f"--rank {shlex.quote(f'{seed}|{seed_dir(seed)}/rank/{R0}.csv')}" for seed in ABL_SEEDS),
        evals=" ".join(f"--eval {shlex.quote(f'{label}|{seed}|{seed_dir(seed)}/eval/{model}.json')}"
                       for label, model in sens_settings() for seed in ABL_SEEDS),
        reference=sens_reference(),
        grid=f"--alphas {' '.join(f'{a:g}' for a in SENS['alphas'])} --mus {' '.join(f'{m:g}' for m in SENS['mus'])}",
        flags=f"--balance {config['tgaa']['balance']} --reading {config['tgaa']['reading']}",
        out_dir=lambda w, output: os.path.dirname(output.table),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/sensitivity.log",
    shell:
        "{params.cmd} --class-stats {input.class_stats:q} {params.ranks} {params.evals} {params.grid} {params.flags}"
        " --reference {params.reference:q} --out-dir {params.out_dir:q} --figure {output.figure:q} > {log:q} 2>&1"


rule sensitivity:
    """snakemake sensitivity: Fig. 8 (alpha, mu and k) over every seed of ablation.seeds."""
    input:
        rules.sensitivity_tables.output,
        RESOLVED,
