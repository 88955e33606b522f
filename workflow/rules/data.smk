# Data: the resolved config's record, the generated demo data set, one checked index per split, source
# class statistics.


rule resolved_config:
    """The resolved config as YAML: a record of the settings the last run resolved (every artifact's
    provenance holds the exact config it was made with)."""
    output:
        RESOLVED,
    params:
        cmd=uncerda("write-config"),
        config=CONFIG_JSON,
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/resolved_config.log",
    shell:
        "{params.cmd} --config-json {params.config:q} --out {output:q} > {log:q} 2>&1"


if config["demo"]["enabled"]:

    rule generate_demo:
        output:
            source=directory(config["source"]["root"]),
            target=directory(config["target"]["root"]),
        params:
            cmd=uncerda("generate-demo", config_json=True),
            settings=settings("demo"),
        log:
            f"{LOGS}/generate_demo.log",
        benchmark:
            f"{BENCH}/generate_demo.tsv"
        resources:
            **res("cpu"),
        shell:
            "{params.cmd} > {log:q} 2>&1"


rule index_source:
    input:
        data_root("source"),
    output:
        SOURCE_INDEX,
    params:
        cmd=uncerda("index"),
        dataset=config["source"]["dataset"],
        root=lambda w: config["source"]["root"],
        split=config["source"]["split"],
    threads: 2
    log:
        f"{LOGS}/index_source.log",
    benchmark:
        f"{BENCH}/index_source.tsv"
    resources:
        **res("cpu"),
    shell:
        "{params.cmd} --dataset {params.dataset} --root {params.root:q} --split {params.split:q}"
        " --out {output:q} --workers {threads} > {log:q} 2>&1"


rule index_target:
    """Target images of a split; train is indexed without labels (the target is unlabelled)."""
    input:
        data_root("target"),
    output:
        f"{EXP}/data/target_{{split}}_index.csv",
    params:
        cmd=uncerda("index"),
        dataset=config["target"]["dataset"],
        root=lambda w: config["target"]["root"],
        no_labels=lambda w: "--no-labels" if w.split == TRAIN_SPLIT else "",
    threads: 2
    log:
        f"{LOGS}/index_target_{{split}}.log",
    benchmark:
        f"{BENCH}/index_target_{{split}}.tsv"
    resources:
        **res("cpu"),
    shell:
        "{params.cmd} --dataset {params.dataset} --root {params.root:q} --split {wildcards.split}"
        " {params.no_labels} --out {output:q} --workers {threads} > {log:q} 2>&1"


rule index_target_labelled:
    """Target train with its ground truth: only for the oracle and pseudo-label diagnosis."""
    input:
        data_root("target"),
    output:
        f"{EXP}/data/labelled/target_{{split}}_index.csv",
    params:
        cmd=uncerda("index"),
        dataset=config["target"]["dataset"],
        root=lambda w: config["target"]["root"],
    threads: 2
    log:
        f"{LOGS}/index_target_{{split}}_labelled.log",
    benchmark:
        f"{BENCH}/index_target_{{split}}_labelled.tsv"
    resources:
        **res("cpu"),
    shell:
        "{params.cmd} --dataset {params.dataset} --root {params.root:q} --split {wildcards.split}"
        " --out {output:q} --workers {threads} > {log:q} 2>&1"


rule holdout_split:
    """Checkpoint selection: a seeded share of target train held out of adaptation (with its labels)."""
    input:
        index=f"{EXP}/data/target_{TRAIN_SPLIT}_index.csv",
        labelled=f"{EXP}/data/labelled/target_{TRAIN_SPLIT}_index.csv",
    output:
        adapt=f"{SELECTION_DATA}/target_adapt_index.csv",
        holdout=f"{SELECTION_DATA}/target_holdout_index.csv",
        labelled_adapt=f"{SELECTION_DATA}/target_adapt_labelled_index.csv",
    params:
        cmd=uncerda("holdout-split", config_json=True),
        settings=settings("selection", omit=("selection.keep_every",)),
        seed=SEED,
    log:
        f"{LOGS}/holdout_split.log",
    resources:
        **res("cpu"),
    shell:
        "{params.cmd} --index {input.index:q}"
        " --labelled-index {input.labelled:q} --adapt-out {output.adapt:q} --holdout-out {output.holdout:q}"
        " --labelled-adapt-out {output.labelled_adapt:q} > {log:q} 2>&1"


rule class_stats:
    input:
        index=rules.index_source.output[0],
    output:
        f"{EXP}/data/source_class_stats.csv",
    params:
        cmd=uncerda("class-stats"),
        dataset=config["source"]["dataset"],
    threads: 2
    log:
        f"{LOGS}/class_stats.log",
    benchmark:
        f"{BENCH}/class_stats.tsv"
    resources:
        **res("cpu"),
    shell:
        "{params.cmd} --index {input.index:q} --dataset {params.dataset} --out {output:q}"
        " --workers {threads} > {log:q} 2>&1"
