# Table 5 and Fig. 3: CBST and GMM pseudo labels from several adaptation models, each followed by the chain's
# self-training, over every seed of ablation.seeds. The maps, pseudo labels and evaluations are the chain's own
# rules; the adaptation models are round-0 variants (train.smk), the chain's final model, or files of your own.


rule import_model:
    """A trained model file named in table5.checkpoints, written as an uncerda checkpoint."""
    input:
        lambda w: T5["checkpoints"][w.ext],
    output:
        f"{EXTERNAL_DIR}/{{ext}}/checkpoint.pt",
    wildcard_constraints:
        ext="[A-Za-z0-9]+",
    params:
        cmd=uncerda("import-model", config_json=True),
        settings=settings("model"),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/import_model_{{ext}}.log",
    shell:
        "{params.cmd} --weights {input:q} --out {output:q} > {log:q} 2>&1"


use rule self_train as self_train_table5 with:
    output:
        ckpt=f"{MODELS}/{{t5_teacher}}_st_{{method}}_r{{k}}/checkpoint.pt",
        losses=f"{MODELS}/{{t5_teacher}}_st_{{method}}_r{{k}}/losses.csv",
    wildcard_constraints:
        t5_teacher=T5_TEACHER_PATTERN,
    log:
        f"{LOGS}/seed{{seed}}/self_train_{{t5_teacher}}_{{method}}_r{{k}}.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/self_train_{{t5_teacher}}_{{method}}_r{{k}}.tsv"


rule table5_table:
    input:
        models=table5_inputs(chain=False),
        chain=table5_inputs(chain=True),
    output:
        table=report(TABLE5, caption="../report/table5.rst", category="Paper tables"),
        md=TABLE5.replace(".csv", ".md"),
        figure=report(TABLE5_FIGURE, caption="../report/table5.rst", category="Paper tables"),
    params:
        cmd=uncerda("table5"),
        rows=lambda w: " ".join(f"--row {shlex.quote('|'.join(map(str, row)))}" for row in table5_rows(w)),
        out_dir=lambda w, output: os.path.dirname(output.table),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/table5.log",
    shell:
        "{params.cmd} {params.rows} --out-dir {params.out_dir:q} --figure {output.figure:q} > {log:q} 2>&1"


rule table5:
    """snakemake table5: Table 5 and Fig. 3 over every seed of ablation.seeds."""
    input:
        rules.table5_table.output,
        RESOLVED,
