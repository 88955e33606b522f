# Training: source-only, adversarial adaptation round 0 (and its controls), target-guided rounds, +SR,
# the AdaBN control and the target oracle. Every training rule resumes from <checkpoint>.resume.pt.


rule train_source_only:
    input:
        source_index=TRAIN_INPUT["source_index"],
    output:
        ckpt=f"{MODELS}/source_only/checkpoint.pt",
        losses=f"{MODELS}/source_only/losses.csv",
    params:
        cmd=uncerda("train-source", config_json=True, train=True),
        settings=settings("model", "train", "source", "source_only", omit=("source.translated_root",)),
        **SELECTION_PARAMS,
    threads: threads_of("train")
    resources:
        **res("train"),
    log:
        f"{LOGS}/seed{{seed}}/train_source_only.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/train_source_only.tsv"
    shell:
        "{params.cmd} --seed {wildcards.seed}"
        " --source-index {input.source_index:q} --out {output.ckpt:q} --losses {output.losses:q} > {log:q} 2>&1"


rule train_oracle:
    """Trained on labelled target images: the upper end of the domain gap (analysis only)."""
    input:
        source_index=target_train_index(labelled=True),
    output:
        ckpt=f"{MODELS}/oracle/checkpoint.pt",
        losses=f"{MODELS}/oracle/losses.csv",
    params:
        cmd=uncerda("train-oracle", config_json=True, train=True),
        settings=settings("model", "train", "target", "ablation", omit=("ablation.seeds", "ablation.pseudo_methods")),
        **SELECTION_PARAMS,
    threads: threads_of("train")
    resources:
        **res("train"),
    log:
        f"{LOGS}/seed{{seed}}/train_oracle.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/train_oracle.tsv"
    shell:
        "{params.cmd} --seed {wildcards.seed}"
        " --source-index {input.source_index:q} --out {output.ckpt:q} --losses {output.losses:q} > {log:q} 2>&1"


rule adapt_round0:
    """Multi-level adversarial adaptation with conventional sampling."""
    input:
        **TRAIN_INPUT,
        **adapt_init(),
    output:
        ckpt=f"{MODELS}/{{variant}}/checkpoint.pt",
        losses=f"{MODELS}/{{variant}}/losses.csv",
    wildcard_constraints:
        variant="|".join(AA_VARIANTS),
    params:
        cmd=uncerda("adapt", config_json=True, train=True),
        flags=lambda w: AA_VARIANTS[w.variant],
        init=init_flag,
        settings=settings("model", "train", "source", "target", "adapt"),
        **SELECTION_PARAMS,
    threads: threads_of("train")
    resources:
        **res("train"),
    log:
        f"{LOGS}/seed{{seed}}/adapt_{{variant}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/adapt_{{variant}}.tsv"
    shell:
        "{params.cmd} --seed {wildcards.seed} {params.flags} {params.init}"
        " --source-index {input.source_index:q} --target-index {input.target_index:q}"
        " --out {output.ckpt:q} --losses {output.losses:q} > {log:q} 2>&1"


rule adapt_tgaa:
    """Target-guided round r: starts from round r-1, draws source images with its S_k's weights."""
    input:
        **TRAIN_INPUT,
        init=lambda w: model_ckpt(previous_model(w), w.seed),
        weights=f"{EXP}/seed{{seed}}/weights/tgaa_r{{r}}.csv",
        rank=lambda w: f"{seed_dir(w.seed)}/rank/{previous_model(w)}.csv",
        class_stats=rules.class_stats.output[0],
    output:
        ckpt=f"{MODELS}/tgaa_r{{r}}/checkpoint.pt",
        losses=f"{MODELS}/tgaa_r{{r}}/losses.csv",
    params:
        cmd=uncerda("adapt", config_json=True, train=True),
        settings=settings("model", "train", "source", "target", "adapt", "tgaa", omit=("tgaa.max_rounds",)),
        **SELECTION_PARAMS,
    threads: threads_of("train")
    resources:
        **res("train"),
    log:
        f"{LOGS}/seed{{seed}}/adapt_tgaa_r{{r}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/adapt_tgaa_r{{r}}.tsv"
    shell:
        "{params.cmd} --seed {wildcards.seed} --init {input.init:q}"
        " --weights {input.weights:q} --rank {input.rank:q} --class-stats {input.class_stats:q}"
        " --source-index {input.source_index:q} --target-index {input.target_index:q}"
        " --out {output.ckpt:q} --losses {output.losses:q} > {log:q} 2>&1"


rule adapt_sr:
    """The SR rung: soft-balance weights over all classes (no target signal). ``sr`` is one round from
    round 0; ``sr_r<r>`` (r >= 2, the ablation's iteration-matched control of +TGAA) continues from
    round r-1 with the same weights."""
    input:
        **TRAIN_INPUT,
        init=lambda w: model_ckpt(previous_sr(w), w.seed),
        weights=f"{EXP}/seed{{seed}}/weights/sr.csv",
        class_stats=rules.class_stats.output[0],
    output:
        ckpt=f"{MODELS}/{{sr_model}}/checkpoint.pt",
        losses=f"{MODELS}/{{sr_model}}/losses.csv",
    wildcard_constraints:
        sr_model=SR_MODEL_PATTERN,
    params:
        cmd=uncerda("adapt", config_json=True, train=True),
        settings=settings("model", "train", "source", "target", "adapt", "tgaa", omit=("tgaa.max_rounds",)),
        **SELECTION_PARAMS,
    threads: threads_of("train")
    resources:
        **res("train"),
    log:
        f"{LOGS}/seed{{seed}}/adapt_{{sr_model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/adapt_{{sr_model}}.tsv"
    shell:
        "{params.cmd} --seed {wildcards.seed} --init {input.init:q}"
        " --weights {input.weights:q} --class-stats {input.class_stats:q}"
        " --source-index {input.source_index:q} --target-index {input.target_index:q}"
        " --out {output.ckpt:q} --losses {output.losses:q} > {log:q} 2>&1"


rule adabn:
    """Control: the source-only model with BatchNorm statistics re-estimated on target images."""
    input:
        ckpt=model_ckpt("source_only"),
        target_index=TRAIN_INPUT["target_index"],
    output:
        f"{MODELS}/source_only_adabn/checkpoint.pt",
    params:
        cmd=uncerda("adabn", config_json=True),
        settings=settings("model", "train", "target"),
    threads: threads_of("infer")
    resources:
        **res("infer"),
    log:
        f"{LOGS}/seed{{seed}}/adabn.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/adabn.tsv"
    shell:
        "{params.cmd} --checkpoint {input.ckpt:q}"
        " --target-index {input.target_index:q} --out {output:q} > {log:q} 2>&1"
