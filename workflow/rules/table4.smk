# Table 4: sampling strategies compared, one adaptation round each from the same round-0 model (+IT),
# over every seed of ablation.seeds: no balance (uniform draws), focal loss (uniform draws), and soft
# balance over every class at each of table4.balances (Eqs. 3-5 under tgaa.reading).


rule weights_table4:
    """A Table 4 round's draws: every image alike, or every class at one balance."""
    input:
        class_stats=rules.class_stats.output[0],
    output:
        f"{EXP}/seed{{seed}}/weights/t4_{{t4w}}.csv",
    wildcard_constraints:
        t4w=T4_WEIGHTS_PATTERN,
    params:
        cmd=uncerda("weights"),
        flags=lambda w: ("--uniform" if w.t4w == "uniform" else f"--all-classes --balance {w.t4w[1:]}")
        + f" --alpha {config['tgaa']['alpha']} --mu {config['tgaa']['mu']} --reading {config['tgaa']['reading']}"
        + (" --balance 0" if w.t4w == "uniform" else ""),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/weights_t4_{{t4w}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/weights_t4_{{t4w}}.tsv"
    shell:
        "{params.cmd} --class-stats {input.class_stats:q} {params.flags} --out {output:q} > {log:q} 2>&1"


rule adapt_table4:
    """One Table 4 round from round 0, as long as a target-guided round."""
    input:
        **TRAIN_INPUT,
        init=lambda w: model_ckpt(R0, w.seed),
        weights=lambda w: f"{seed_dir(w.seed)}/weights/t4_{t4_weights_of(w.t4_model)}.csv",
        class_stats=rules.class_stats.output[0],
    output:
        ckpt=f"{MODELS}/{{t4_model}}/checkpoint.pt",
        losses=f"{MODELS}/{{t4_model}}/losses.csv",
    wildcard_constraints:
        t4_model=T4_MODEL_PATTERN,
    params:
        cmd=uncerda("adapt", config_json=True, train=True),
        settings=settings("model", "train", "source", "target", "adapt", "tgaa", omit=("tgaa.max_rounds",)),
        loss=lambda w: "focal" if w.t4_model == "t4_focal" else "cross_entropy",
        **SELECTION_PARAMS,
    threads: threads_of("train")
    resources:
        **res("train"),
    log:
        f"{LOGS}/seed{{seed}}/adapt_{{t4_model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/adapt_{{t4_model}}.tsv"
    shell:
        "{params.cmd} --seed {wildcards.seed} --init {input.init:q}"
        " --weights {input.weights:q} --class-stats {input.class_stats:q} --source-loss {params.loss}"
        " --source-index {input.source_index:q} --target-index {input.target_index:q}"
        " --out {output.ckpt:q} --losses {output.losses:q} > {log:q} 2>&1"


rule table4_table:
    input:
        lambda w: sorted({path for *_, metrics, weights in table4_rows(w) for path in (metrics, weights)}),
    output:
        table=report(TABLE4, caption="../report/table4.rst", category="Ablation"),
        md=TABLE4.replace(".csv", ".md"),
    params:
        cmd=uncerda("table4"),
        rows=lambda w: " ".join(f"--row {shlex.quote('|'.join(map(str, row)))}" for row in table4_rows(w)),
        out_dir=lambda w, output: os.path.dirname(output.table),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/table4.log",
    shell:
        "{params.cmd} {params.rows} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule table4:
    """snakemake table4: Table 4 (sampling strategies) over every seed of ablation.seeds."""
    input:
        rules.table4_table.output,
        RESOLVED,
