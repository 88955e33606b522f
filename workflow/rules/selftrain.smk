# Pseudo labels from a maps file (GMM of Eq. 6, or a baseline) and self-training rounds.


rule pseudo_labels:
    input:
        maps=f"{EXP}/seed{{seed}}/maps/{{model}}.h5",
    output:
        directory(f"{EXP}/seed{{seed}}/pseudo/{{model}}/{{method}}"),
    params:
        cmd=uncerda("pseudo-labels", config_json=True),
        gt=GT_FLAGS,
        settings=settings("pseudo"),
    threads: 2  # the histogram pass runs over 2 processes (the command's --workers default)
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/pseudo_{{model}}_{{method}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/pseudo_{{model}}_{{method}}.tsv"
    shell:
        "{params.cmd} --maps {input.maps:q}"
        " --method {wildcards.method} {params.gt} --out-dir {output:q} > {log:q} 2>&1"


rule pseudo_labels_cbst_at_gmm_coverage:
    """CBST with its portion set to the GMM selection's overall coverage: Table 5 at equal coverage."""
    input:
        maps=f"{EXP}/seed{{seed}}/maps/{{model}}.h5",
        gmm=f"{EXP}/seed{{seed}}/pseudo/{{model}}/gmm",
    output:
        directory(f"{EXP}/seed{{seed}}/pseudo/{{model}}/{CBST_AT_GMM}"),
    params:
        cmd=uncerda("pseudo-labels", config_json=True),
        gt=GT_FLAGS,
        settings=settings("pseudo"),
    threads: 2
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/pseudo_{{model}}_{CBST_AT_GMM}.log",
    shell:
        "{params.cmd} --maps {input.maps:q}"
        " --cbst-at-coverage-of {input.gmm:q} {params.gt} --out-dir {output:q} > {log:q} 2>&1"


rule self_train:
    input:
        **TRAIN_INPUT,
        init=lambda w: model_ckpt(st_teacher(w), w.seed),
        pseudo=lambda w: f"{seed_dir(w.seed)}/pseudo/{st_teacher(w)}/{w.method}",
    output:
        ckpt=f"{MODELS}/st_{{method}}_r{{k}}/checkpoint.pt",
        losses=f"{MODELS}/st_{{method}}_r{{k}}/losses.csv",
    params:
        cmd=uncerda("self-train", config_json=True, train=True),
        settings=settings("model", "train", "source", "target", "adapt", "selftrain", omit=("selftrain.rounds",)),
        **SELECTION_PARAMS,
    threads: threads_of("train")
    resources:
        **res("train"),
    log:
        f"{LOGS}/seed{{seed}}/self_train_{{method}}_r{{k}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/self_train_{{method}}_r{{k}}.tsv"
    shell:
        "{params.cmd} --seed {wildcards.seed} --init {input.init:q}"
        " --pseudo-dir {input.pseudo:q} --source-index {input.source_index:q}"
        " --target-index {input.target_index:q} --out {output.ckpt:q} --losses {output.losses:q} > {log:q} 2>&1"


rule self_train_online:
    """Online self-training (selftrain.mode: online): an EMA teacher labels each target batch, no pseudo folder."""
    input:
        unpack(online_draw_inputs),
        **TRAIN_INPUT,
        init=online_init,
    output:
        ckpt=f"{MODELS}/{{online_model}}/checkpoint.pt",
        losses=f"{MODELS}/{{online_model}}/losses.csv",
    wildcard_constraints:
        online_model=ONLINE_MODEL_PATTERN,
    params:
        cmd=uncerda("self-train", config_json=True, train=True),
        flags=lambda w: online_flags(w.online_model),
        draws=lambda w, input: draw_flags(input),
        settings=settings("model", "train", "source", "target", "adapt", "selftrain", omit=("selftrain.rounds",)),
        **SELECTION_PARAMS,
    threads: threads_of("train")
    resources:
        **res("train"),
    log:
        f"{LOGS}/seed{{seed}}/self_train_{{online_model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/self_train_{{online_model}}.tsv"
    shell:
        "{params.cmd} {params.flags} {params.draws} --seed {wildcards.seed} --init {input.init:q}"
        " --source-index {input.source_index:q} --target-index {input.target_index:q}"
        " --out {output.ckpt:q} --losses {output.losses:q} > {log:q} 2>&1"


rule online_table:
    input:
        lambda w: [path for *_, path in online_evals(w)],
    output:
        table=report(ONLINE_TABLE, caption="../report/online.rst", category="Ablation"),
        md=ONLINE_TABLE.replace(".csv", ".md"),
    params:
        cmd=uncerda("online-table"),
        evals=lambda w: " ".join(f"--eval {shlex.quote('|'.join(map(str, e)))}" for e in online_evals(w)),
        reference=ONLINE_REFERENCE,
        out_dir=lambda w, output: os.path.dirname(output.table),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/online_table.log",
    shell:
        "{params.cmd} {params.evals} --reference {params.reference:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule online:
    """snakemake online: online self-training beside +UPST over every seed of ablation.seeds."""
    input:
        rules.online_table.output,
        ONLINE_CURVES,
        RESOLVED,
