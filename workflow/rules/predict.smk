# Predictions of the final model (+UPST of the main seed) for every image of a target split, in the
# benchmark's formats, and the zip of its label ids that the Cityscapes server takes.
#   snakemake predict --cores 2                                   predict.split, default the val split
#   snakemake predict --cores 2 --config predict='{split: test}'


rule predict_split:
    """``uncerda predict`` over <target.root>/leftImg8bit/<split> (its city folders mirrored)."""
    input:
        ckpt=model_ckpt(ST_LAST),
    output:
        preds=directory(f"{EXP}/seed{{seed}}/predictions/{ST_LAST}/{{split}}"),
        zip=f"{EXP}/seed{{seed}}/submission/{ST_LAST}_{{split}}.zip",
    params:
        cmd=uncerda("predict", config_json=True),
        images=lambda w: f"{config['target']['root']}/leftImg8bit/{w.split}",
        settings=settings("model", "target", "train", "predict", "evaluate", omit=("predict.split",)),
    threads: threads_of("infer")
    resources:
        **res("infer"),
    log:
        f"{LOGS}/seed{{seed}}/predict_{{split}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/predict_{{split}}.tsv"
    shell:
        "{params.cmd} --checkpoint {input.ckpt:q} --input {params.images:q}"
        " --out-dir {output.preds:q} --zip {output.zip:q} > {log:q} 2>&1"


rule predict:
    """The final model's predictions of the target split and the benchmark submission zip."""
    input:
        f"{EXP}/seed{SEED}/submission/{ST_LAST}_{PREDICT_SPLIT}.zip",
