# The paper's tables and figures in one target: Tables 1/2 (per-class IoU in the paper's layout), 3 (the
# ablation), 4, 5 and Figs. 3, 6 and 8, over every seed of ablation.seeds.


rule per_class_table:
    """Tables 1/2: per-class IoU of the final AA and ST models, the paper's UncerDA rows beside."""
    input:
        lambda w: [path for *_, path in per_class_rows(w)],
    output:
        table=report(PER_CLASS, caption="../report/per_class.rst", category="Paper tables"),
        md=PER_CLASS.replace(".csv", ".md"),
    params:
        cmd=uncerda("per-class-table"),
        rows=lambda w: " ".join(f"--row {shlex.quote('|'.join(map(str, row)))}" for row in per_class_rows(w)),
        source=config["source"]["dataset"],
        out_dir=lambda w, output: os.path.dirname(output.table),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/per_class_table.log",
    shell:
        "{params.cmd} {params.rows} --source-dataset {params.source} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule paper_tables:
    """snakemake paper_tables: Tables 1/2, 3, 4 and 5 and Figs. 3, 6 (seed `seed`'s per-class bars) and 8."""
    input:
        rules.per_class_table.output,
        rules.ablation.input,
        rules.table4.input,
        rules.sensitivity.input,
        rules.table5.input,
        f"{REPORT}/seed{SEED}/iou_per_class.png",
