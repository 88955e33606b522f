# uncerda: uncertainty-aware pseudo label refinery as a reproducible workflow.
#   snakemake --cores 2                      the main chain on the configured data (default: the demo)
#   snakemake ablation --cores 2             Table 3 ladder and Table 5 comparison, every seed
#   snakemake -n --configfile workflow/presets/gta5_cityscapes.yaml --config source='{root: ...}'
import os

from snakemake.utils import min_version

min_version("8.0")


# Found beside this Snakefile, so the workflow also runs with --directory elsewhere.
configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/uncertainty.smk"
include: "workflow/rules/selftrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        main_targets(),
        report_figure_files(),
        RESOLVED,
    default_target: True
