# uncerda: uncertainty-aware pseudo label refinery as a reproducible workflow.
#   snakemake --cores 2                      the main chain on the configured data (default: the demo)
#   snakemake ablation --cores 2             Table 3 ladder, controls and pseudo-label methods on +TGAA, every seed
#   snakemake table4 --cores 2               Table 4: sampling strategies, one round each, every seed
#   snakemake sensitivity --cores 2          Fig. 8: Eq. 5's alpha and mu, and k, every seed
#   snakemake table5 --cores 2               Table 5 and Fig. 3: pseudo labels across adaptation models, every seed
#   snakemake paper_tables --cores 2         Tables 1/2, 3, 4 and 5 and Figs. 3, 6 and 8 in one go
#   snakemake predict --cores 2              the final model's predictions and the benchmark zip
#   snakemake -n --configfile workflow/presets/gta5_cityscapes.yaml --config source='{root: ...}' ... model='{init: ...}'
import os

from snakemake.utils import min_version

min_version("8.0")


# A preset is a complete experiment: the config is the schema's defaults, then EITHER the files
# given with --configfile OR (when none is given) the demo config.yaml beside this Snakefile, then
# the --config overrides. Snakemake would merge a `configfile:` under the --configfile ones, so
# demo keys (output stride, network width) would leak into a paper run; it is read only when no
# --configfile was given. Found beside this Snakefile, so --directory elsewhere works too.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/uncertainty.smk"
include: "workflow/rules/selftrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/table4.smk"
include: "workflow/rules/sensitivity.smk"
include: "workflow/rules/table5.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        main_targets(),
        report_figure_files(),
        RESOLVED,
    default_target: True
