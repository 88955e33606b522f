# Checkpoint selection (selection.enabled): each trained stage's snapshots scored on the held-out
# target train images; model_ckpt() (common.smk) routes every later rule to the chosen one.


rule select_model:
    """The snapshot of a stage with the best mIoU on held-out target train (never on target val)."""
    input:
        ckpt=f"{EXP}/seed{{seed}}/models/{{model}}/checkpoint.pt",
        holdout=rules.holdout_split.output.holdout,
    output:
        ckpt=f"{EXP}/seed{{seed}}/selected/{{model}}/checkpoint.pt",
        json=f"{EXP}/seed{{seed}}/selected/{{model}}/selection.json",
    params:
        cmd=uncerda("select", config_json=True),
        settings=settings("model", "target", "source", "evaluate", "selection", omit=("source.translated_root",)),
        out_dir=lambda w, output: os.path.dirname(output.json),
    threads: threads_of("infer")
    resources:
        **res("infer"),
    log:
        f"{LOGS}/seed{{seed}}/select_{{model}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/select_{{model}}.tsv"
    shell:
        "{params.cmd} --checkpoint {input.ckpt:q}"
        " --holdout-index {input.holdout:q} --out {params.out_dir:q} > {log:q} 2>&1"
