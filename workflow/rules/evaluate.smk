# Evaluation of every model on the target val set, and the main chain's summary table.


rule evaluate:
    """Per-class IoU and mIoU on target val, at the labels' full resolution."""
    input:
        ckpt=lambda w: model_ckpt(w.model, w.seed),
        index=f"{EXP}/data/target_{VAL_SPLIT}_index.csv",
    output:
        json=f"{EXP}/seed{{seed}}/eval/{{model}}.json",
        csv=f"{EXP}/seed{{seed}}/eval/{{model}}.csv",
    params:
        cmd=uncerda("evaluate", config_json=True),
        settings=settings("model", "target", "source", "evaluate", omit=("source.translated_root",)),
    threads: threads_of("infer")
    resources:
        **res("infer"),
    log:
        f"{LOGS}/seed{{seed}}/evaluate_{{model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/evaluate_{{model}}.tsv"
    shell:
        "{params.cmd} --checkpoint {input.ckpt:q}"
        " --index {input.index:q} --name {wildcards.model:q} --out {output.json:q} --csv {output.csv:q}"
        " > {log:q} 2>&1"


rule summary:
    input:
        unpack(chain_rungs),
        decision=lambda w: f"{seed_dir(w.seed)}/rounds/r{final_round(w)}.json",
    output:
        md=report(
            f"{EXP}/seed{{seed}}/summary.md",
            caption="../report/summary.rst",
            category="Results",
            labels={"figure": "1. results table (markdown)", "seed": "{seed}"},
        ),
        csv=f"{EXP}/seed{{seed}}/summary.csv",
    params:
        cmd=uncerda("summarize"),
        evals=lambda w: " ".join(shlex.quote(f"{label}={path}") for label, path in chain_rungs(w).items()),
        source=config["source"]["dataset"],
        rounds_dir=lambda w, input: os.path.dirname(input.decision),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/summary.log",
    shell:
        "{params.cmd} {params.evals} --source-dataset {params.source}"
        " --rounds-dir {params.rounds_dir:q} --out {output.md:q} --csv {output.csv:q} > {log:q} 2>&1"
