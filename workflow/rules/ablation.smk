# The ablation, in one target: Table 3's ladder with controls, and Table 5's pseudo-label comparison,
# over every seed of ablation.seeds. Models already built by the main chain are reused.

ABL_SEEDS = config["ablation"]["seeds"]
ABL_METHODS = config["ablation"]["pseudo_methods"]


def _eval(seed, model):
    return f"{seed_dir(seed)}/eval/{model}.json"


def ablation_evals(wildcards):
    """(label, kind, seed, metrics JSON) for every rung and control of every seed."""
    items = []
    for seed in ABL_SEEDS:
        final = final_aa_of(seed)
        rungs = [("Source only", "source_only"), ("+AA", "aa"), ("+IT", "aa_it"), ("+SR", "sr"),
                 ("+TGAA", final), ("+UPST", ST_LAST)]
        controls = [("Source only + AdaBN", "source_only_adabn"),
                    ("AA with lambda_adv = 0 (target batches seen)", "aa_noadv"),
                    ("Target oracle (trained on target labels)", "oracle")]
        items += [(label, "rung", seed, _eval(seed, model)) for label, model in rungs]
        items += [(label, "control", seed, _eval(seed, model)) for label, model in controls]
    return items


def ablation_pseudo(wildcards):
    """(method, seed, quality JSON or '', self-trained model's metrics) for Table 5."""
    items = []
    for seed in ABL_SEEDS:
        final = final_aa_of(seed)
        for method in ABL_METHODS:
            quality = f"{seed_dir(seed)}/pseudo/{final}/{method}/quality.json" if GT_FLAGS else ""
            items.append((method, seed, quality, _eval(seed, f"st_{method}_{ST_FINAL}")))
        if GT_FLAGS and {"gmm", "cbst"} <= set(ABL_METHODS):  # precision only: no self-training from it
            items.append(("cbst at gmm's coverage", seed,
                          f"{seed_dir(seed)}/pseudo/{final}/{CBST_AT_GMM}/quality.json", ""))
    return items


def _ablation_inputs(wildcards):
    files = [path for *_, path in ablation_evals(wildcards)]
    for method, seed, quality, st in ablation_pseudo(wildcards):
        if st:
            files.append(st)
        if quality:
            files.append(str(Path(quality).parent))
    return sorted(set(files))


rule ablation_tables:
    input:
        _ablation_inputs,
    output:
        ladder=report(f"{EXP}/ablation/ladder.csv", caption="../report/ladder.rst", category="Ablation"),
        ladder_md=f"{EXP}/ablation/ladder.md",
        methods=report(f"{EXP}/ablation/pseudo_methods.csv", caption="../report/pseudo_methods.rst",
                       category="Ablation"),
        methods_md=f"{EXP}/ablation/pseudo_methods.md",
    params:
        evals=lambda w: " ".join(f"--eval {shlex.quote(f'{l}|{k}|{s}|{p}')}" for l, k, s, p in ablation_evals(w)),
        pseudo=lambda w: " ".join(f"--pseudo {shlex.quote(f'{m}|{s}|{q}|{e}')}"
                                  for m, s, q, e in ablation_pseudo(w)),
        out_dir=lambda w, output: os.path.dirname(output.ladder),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/ablation_tables.log",
    shell:
        "{UNCERDA} ablation-tables {params.evals} {params.pseudo} --out-dir {params.out_dir:q}"
        " > {log:q} 2>&1"


rule ablation:
    """snakemake ablation: the whole ladder, controls and pseudo-label comparison for every seed."""
    input:
        rules.ablation_tables.output,
        lambda w: ABLATION_FIGURES,
        # Each seed's summary as a plain input: a seed added to ablation.seeds after the tables were
        # built would otherwise go unnoticed (the tables' inputs wait on that seed's round checkpoint,
        # and Snakemake does not rerun a job with existing outputs for an unfinished checkpoint).
        [f"{seed_dir(seed)}/summary.md" for seed in ABL_SEEDS],
        RESOLVED,
