# Report figures: one rule per figure, each one `uncerda figure-*` call. `report_figures` builds every
# figure of the main seed, and the ablation's when its tables exist (after `snakemake ablation`).
#   snakemake --cores 2 && snakemake --report report.html


rule report_summary_table:
    """The main chain's summary table (summary.csv) as an HTML page, with how the round loop ended."""
    input:
        table=f"{EXP}/seed{{seed}}/summary.csv",
        decision=lambda w: f"{seed_dir(w.seed)}/rounds/r{final_round(w)}.json",
    output:
        report(
            f"{REPORT_SEED}/summary.html",
            caption="../report/summary.rst",
            category="Results",
            labels=report_labels("1. results table (main chain)"),
        ),
    params:
        cmd=uncerda("table-html"),
        rounds_dir=lambda w, input: os.path.dirname(input.decision),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/report_summary_table.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/report_summary_table.tsv"
    shell:
        "{params.cmd} --csv {input.table:q} --rounds-dir {params.rounds_dir:q}"
        " --title 'Results on target val, seed {wildcards.seed}' --out {output:q} > {log:q} 2>&1"


rule report_iou:
    """Per-class IoU of every stage as grouped bars (Fig. 6)."""
    input:
        evals=lambda w: [f"{seed_dir(w.seed)}/eval/{m}.json" for m in report_models(w)],
        rank=f"{EXP}/seed{{seed}}/rank/{R0}.csv",
    output:
        report(
            f"{REPORT_SEED}/iou_per_class.png",
            caption="../report/iou_per_class.rst",
            category="Results",
            labels=report_labels("2. per-class IoU per stage (Fig. 6)"),
        ),
    params:
        cmd=uncerda("figure-iou"),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/report_iou.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/report_iou.tsv"
    shell:
        "{params.cmd} {input.evals:q} --highlight-rank {input.rank:q} --out {output:q} > {log:q} 2>&1"


rule report_curves:
    """Each stage's losses.csv against the iteration, and the mIoU of each model along the chain."""
    input:
        losses=lambda w: [f"{seed_dir(w.seed)}/models/{m}/losses.csv" for m in report_models(w)],
        evals=lambda w: [f"{seed_dir(w.seed)}/eval/{m}.json" for m in report_models(w)],
    output:
        report(
            f"{REPORT_SEED}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Results",
            labels=report_labels("4. training curves per stage"),
        ),
    params:
        cmd=uncerda("figure-curves"),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/report_curves.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/report_curves.tsv"
    shell:
        "{params.cmd} {input.losses:q} --evals {input.evals:q} --out {output:q} > {log:q} 2>&1"


rule report_examples:
    """Target val images with ground truth, each stage's prediction and entropy (Figs. 5 and 7)."""
    input:
        ckpts=report_checkpoints,
        index=f"{EXP}/data/target_{VAL_SPLIT}_index.csv",
    output:
        report(
            f"{REPORT_SEED}/examples.png",
            caption="../report/examples.rst",
            category="Results",
            labels=report_labels("3. target val examples (Figs. 5, 7)"),
        ),
    params:
        cmd=uncerda("figure-examples", config_json=True),
        entropy=f"{R0} {ST_LAST}",
        n=EXAMPLE_IMAGES,
        # A digest of the config sections inference reads: reruns on a change, short in the report.
        settings=hashlib.sha256(settings("model", "target", "train", "dump").encode()).hexdigest()[:16],
    threads: threads_of("infer")
    resources:
        **res("infer"),
    log:
        f"{LOGS}/seed{{seed}}/report_examples.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/report_examples.tsv"
    shell:
        "{params.cmd} --checkpoint {input.ckpts:q}"
        " --index {input.index:q} --n-images {params.n} --entropy {params.entropy} --out {output:q} > {log:q} 2>&1"


rule report_rank:
    """Class-uncertainty rank and S_k of every round as a class x round heat map."""
    input:
        ranks=lambda w: [f"{seed_dir(w.seed)}/rank/{m}.csv" for m in report_models(w)[1:-1]],
        decisions=lambda w: [f"{seed_dir(w.seed)}/rounds/r{r}.json" for r in report_rounds(w)],
    output:
        report(
            f"{REPORT_SEED}/rank.png",
            caption="../report/rank_rounds.rst",
            category="Class uncertainty",
            labels={"model": "1. figure: rank and S_k, every round", "seed": "{seed}"},
        ),
    params:
        cmd=uncerda("figure-rank"),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/report_rank.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/report_rank.tsv"
    shell:
        "{params.cmd} {input.ranks:q} --decisions {input.decisions:q} --out {output:q} > {log:q} 2>&1"


rule report_weights:
    """Distribution of the source sampling weights of every target-guided round (Eqs. 3-5)."""
    input:
        lambda w: [f"{seed_dir(w.seed)}/weights/tgaa_r{r}.csv" for r in report_rounds(w)],
    output:
        report(
            f"{REPORT_SEED}/weights.png",
            caption="../report/weights.rst",
            category="Class uncertainty",
            labels={"model": "2. figure: sampling weights, every round", "seed": "{seed}"},
        ),
    params:
        cmd=uncerda("figure-weights"),
        alpha=config["tgaa"]["alpha"],
        mu=config["tgaa"]["mu"],
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/report_weights.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/report_weights.tsv"
    shell:
        "{params.cmd} {input:q} --alpha {params.alpha} --mu {params.mu} --out {output:q} > {log:q} 2>&1"


rule report_gmm:
    """Each class's entropy histogram with the fitted mixture and the selected interval (Fig. 4)."""
    input:
        maps=lambda w: f"{seed_dir(w.seed)}/maps/{final_aa(w)}.h5",
        pseudo=report_pseudo_dir,
    output:
        report(
            f"{REPORT_SEED}/entropy_gmm.png",
            caption="../report/entropy_gmm.rst",
            category="Pseudo labels",
            labels=report_labels("entropy histograms and GMM (Fig. 4)"),
        ),
    params:
        cmd=uncerda("figure-gmm"),
        label=final_aa,
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/report_gmm.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/report_gmm.tsv"
    shell:
        "{params.cmd} --maps {input.maps:q} --pseudo-dir {input.pseudo:q} --label {params.label:q}"
        " --out {output:q} > {log:q} 2>&1"


rule report_pseudo_quality:
    """Precision and coverage per class of the GMM pseudo labels (where target train has ground truth)."""
    input:
        report_pseudo_dir,
    output:
        report(
            f"{REPORT_SEED}/pseudo_quality.png",
            caption="../report/pseudo_quality.rst",
            category="Pseudo labels",
            labels=report_labels("precision and coverage per class"),
        ),
    params:
        cmd=uncerda("figure-pseudo-quality"),
        label=lambda w: f"GMM, {final_aa(w)}",
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/seed{{seed}}/report_pseudo_quality.log",
    benchmark:
        f"{BENCH}/seed{{seed}}/report_pseudo_quality.tsv"
    shell:
        "{params.cmd} --pseudo-dir {input:q} --label {params.label:q} --out {output:q}"
        " > {log:q} 2>&1"


rule report_ablation_ladder_table:
    """The ablation's ladder (Table 3, ladder.csv) as an HTML table."""
    input:
        ABLATION_TABLES["ladder"],
    output:
        report(
            ABLATION_FIGURES[0],
            caption="../report/ablation_ladder.rst",
            category="Ablation",
            labels={"figure": "1. ladder (Table 3), table"},
        ),
    params:
        cmd=uncerda("table-html"),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/report_ablation_ladder_table.log",
    benchmark:
        f"{BENCH}/report_ablation_ladder_table.tsv"
    shell:
        "{params.cmd} --csv {input:q} --title 'Ablation ladder' --out {output:q} > {log:q} 2>&1"


rule report_ablation_ladder_figure:
    """The ablation's ladder (Table 3) as a figure."""
    input:
        ABLATION_TABLES["ladder"],
    output:
        report(
            ABLATION_FIGURES[1],
            caption="../report/ablation_ladder.rst",
            category="Ablation",
            labels={"figure": "2. ladder (Table 3), figure"},
        ),
    params:
        cmd=uncerda("figure-ladder"),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/report_ablation_ladder_figure.log",
    benchmark:
        f"{BENCH}/report_ablation_ladder_figure.tsv"
    shell:
        "{params.cmd} --csv {input:q} --out {output:q} > {log:q} 2>&1"


rule report_ablation_methods_table:
    """The ablation's pseudo-label comparison (Table 5, pseudo_methods.csv) as an HTML table."""
    input:
        ABLATION_TABLES["methods"],
    output:
        report(
            ABLATION_FIGURES[2],
            caption="../report/ablation_pseudo_methods.rst",
            category="Ablation",
            labels={"figure": "3. pseudo-label methods (Table 5), table"},
        ),
    params:
        cmd=uncerda("table-html"),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/report_ablation_methods_table.log",
    benchmark:
        f"{BENCH}/report_ablation_methods_table.tsv"
    shell:
        "{params.cmd} --csv {input:q} --title 'Pseudo-label methods' --out {output:q} > {log:q} 2>&1"


rule report_ablation_methods_figure:
    """The ablation's pseudo-label comparison (Table 5) as a figure."""
    input:
        ABLATION_TABLES["methods"],
    output:
        report(
            ABLATION_FIGURES[3],
            caption="../report/ablation_pseudo_methods.rst",
            category="Ablation",
            labels={"figure": "4. pseudo-label methods (Table 5), figure"},
        ),
    params:
        cmd=uncerda("figure-pseudo-methods"),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/report_ablation_methods_figure.log",
    benchmark:
        f"{BENCH}/report_ablation_methods_figure.tsv"
    shell:
        "{params.cmd} --csv {input:q} --out {output:q} > {log:q} 2>&1"


rule report_figures:
    """Every report figure of the main seed (and the ablation's, once `snakemake ablation` has run)."""
    input:
        report_figure_files(),


rule report_online_curves:
    """The training curves of the main seed's online self-training runs beside +UPST's (snakemake online)."""
    input:
        losses=[f"{seed_dir(SEED)}/models/{m}/losses.csv" for _, m in online_curve_models()],
        evals=[f"{seed_dir(SEED)}/eval/{m}.json" for _, m in online_curve_models()],
    output:
        report(ONLINE_CURVES, caption="../report/online.rst", category="Ablation"),
    params:
        cmd=uncerda("figure-curves"),
        losses=" ".join(shlex.quote(f"{label}={seed_dir(SEED)}/models/{m}/losses.csv") for label, m in online_curve_models()),
        evals=" ".join(shlex.quote(f"{label}={seed_dir(SEED)}/eval/{m}.json") for label, m in online_curve_models()),
    resources:
        **res("cpu"),
    log:
        f"{LOGS}/report_online_curves.log",
    shell:
        "{params.cmd} {params.losses} --evals {params.evals} --out {output:q} > {log:q} 2>&1"
