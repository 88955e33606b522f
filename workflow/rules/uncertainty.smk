# Target-guided uncertainty rectifying: maps of the target train set, class ranking (Eq. 1),
# sampling weights (Eqs. 3-5) and the checkpoint that decides whether another round is needed.


rule dump_maps:
    """Argmax, entropy (Eq. 2) and max-probability maps of every target train image (HDF5)."""
    input:
        ckpt=lambda w: model_ckpt(w.model, w.seed),
        index=target_train_index(),
    output:
        f"{EXP}/seed{{seed}}/maps/{{model}}.h5",
    params:
        cmd=uncerda("dump", config_json=True),
        settings=settings("model", "target", "dump"),
    threads: threads_of("infer")
    resources:
        **res("infer"),
    log:
        f"{LOGS}/seed{{seed}}/dump_{{model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/dump_{{model}}.tsv"
    shell:
        "{params.cmd} --checkpoint {input.ckpt:q}"
        " --index {input.index:q} --out {output:q} > {log:q} 2>&1"


rule rank_classes:
    """Mean entropy per predicted class over the target train set (Eq. 1), rank and S_k."""
    input:
        maps=f"{EXP}/seed{{seed}}/maps/{{model}}.h5",
    output:
        report(
            f"{EXP}/seed{{seed}}/rank/{{model}}.csv",
            caption="../report/rank.rst",
            category="Class uncertainty",
            labels={"model": "{model}", "seed": "{seed}"},
        ),
    params:
        cmd=uncerda("rank"),
        k=config["tgaa"]["k"],
    threads: 2  # the histogram pass runs over 2 processes (the command's --workers default)
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/rank_{{model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/rank_{{model}}.tsv"
    shell:
        "{params.cmd} --maps {input.maps:q} --k {params.k} --out {output:q} > {log:q} 2>&1"


rule weights_tgaa:
    """Sampling weight per source image from the previous round's S_k (Eqs. 3-5)."""
    input:
        class_stats=rules.class_stats.output[0],
        rank=lambda w: f"{seed_dir(w.seed)}/rank/{previous_model(w)}.csv",
    output:
        f"{EXP}/seed{{seed}}/weights/tgaa_r{{r}}.csv",
    params:
        cmd=uncerda("weights"),
        flags=WEIGHT_FLAGS,
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/weights_tgaa_r{{r}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/weights_tgaa_r{{r}}.tsv"
    shell:
        "{params.cmd} --class-stats {input.class_stats:q} --rank {input.rank:q} {params.flags}"
        " --out {output:q} > {log:q} 2>&1"


rule weights_sr:
    """The SR rung: the same Eqs. 3-5 with S_k = all classes."""
    input:
        class_stats=rules.class_stats.output[0],
    output:
        f"{EXP}/seed{{seed}}/weights/sr.csv",
    params:
        cmd=uncerda("weights"),
        flags=WEIGHT_FLAGS,
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/weights_sr.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/weights_sr.tsv"
    shell:
        "{params.cmd} --class-stats {input.class_stats:q} --all-classes {params.flags}"
        " --out {output:q} > {log:q} 2>&1"


checkpoint decide_round:
    """After round r: another round unless S_k stopped changing or max_rounds is reached."""
    input:
        rank=f"{EXP}/seed{{seed}}/rank/tgaa_r{{r}}.csv",
        previous=lambda w: f"{seed_dir(w.seed)}/rank/{previous_model(w)}.csv",
    output:
        f"{EXP}/seed{{seed}}/rounds/r{{r}}.json",
    params:
        cmd=uncerda("decide-round"),
        max_rounds=config["tgaa"]["max_rounds"],
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/decide_round_r{{r}}.log",
    shell:
        "{params.cmd} --round {wildcards.r} --rank {input.rank:q} --previous-rank {input.previous:q}"
        " --max-rounds {params.max_rounds} --out {output:q} > {log:q} 2>&1"
