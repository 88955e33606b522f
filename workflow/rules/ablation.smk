# The ablation, in one target: Table 3's ladder with controls, and Table 5's pseudo-label comparison,
# over every seed of ablation.seeds. Models already built by the main chain are reused.


rule ablation_tables:
    input:
        _ablation_inputs,
    output:
        ladder=report(ABLATION_TABLES["ladder"], caption="../report/ladder.rst", category="Ablation"),
        ladder_md=ABLATION_TABLES["ladder_md"],
        methods=report(ABLATION_TABLES["methods"], caption="../report/pseudo_methods.rst", category="Ablation"),
        methods_md=ABLATION_TABLES["methods_md"],
    params:
        cmd=uncerda("ablation-tables"),
        evals=lambda w: " ".join(f"--eval {shlex.quote(f'{l}|{k}|{s}|{p}')}" for l, k, s, p in ablation_evals(w)),
        pseudo=lambda w: " ".join(f"--pseudo {shlex.quote(f'{m}|{s}|{q}|{e}')}"
                                  for m, s, q, e in ablation_pseudo(w)),
        out_dir=lambda w, output: os.path.dirname(output.ladder),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/ablation_tables.log",
    shell:
        "{params.cmd} {params.evals} {params.pseudo} --out-dir {params.out_dir:q}"
        " > {log:q} 2>&1"


rule ablation_sk_classes:
    """+TGAA against its matched +SR control, on the classes of the S_k that guided round 1 and on the others:
    whether the target-guided rounds lift the classes they were guided by."""
    input:
        lambda w: sorted({path for _, *paths in ablation_sk_models(w) for path in paths}),
    output:
        table=report(SK_CLASS_TABLE, caption="../report/sk_classes.rst", category="Ablation"),
        md=SK_CLASS_TABLE.replace(".csv", ".md"),
    params:
        cmd=uncerda("ablation-sk-classes"),
        seeds=lambda w: " ".join(f"--seed-models {shlex.quote('|'.join(map(str, item)))}"
                                 for item in ablation_sk_models(w)),
        source=config["source"]["dataset"],
        out_dir=lambda w, output: os.path.dirname(output.table),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/ablation_sk_classes.log",
    shell:
        "{params.cmd} {params.seeds} --source-dataset {params.source} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule ablation:
    """snakemake ablation: the whole ladder, controls and pseudo-label comparison for every seed."""
    input:
        rules.ablation_tables.output,
        rules.ablation_sk_classes.output,
        lambda w: ABLATION_FIGURES,
        # Each seed's summary as a plain input: a seed added to ablation.seeds after the tables were
        # built would otherwise go unnoticed (the tables' inputs wait on that seed's round checkpoint,
        # and Snakemake does not rerun a job with existing outputs for an unfinished checkpoint).
        [f"{seed_dir(seed)}/summary.md" for seed in ABL_SEEDS],
        RESOLVED,
