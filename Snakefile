# clipbench: the thesis' experiments, end to end.
#   snakemake --cores 2                                   embedded default (offline, CPU, minutes)
#   snakemake --cores all --configfile config/thesis.yaml  the full replication
# Rules are thin: each calls the `clipbench` command line, where everything testable lives.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# `snakemake --report report.zip`: the figures and tables marked with report() in the rules,
# one category per task, captions in workflow/report/.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/diagnostics.smk"
include: "workflow/rules/report.smk"


onstart:
    check_slurm_requests()
    start_jobserver()


onsuccess:
    stop_jobserver()
    say_what_failed()
    prune_checkpoints()


onerror:
    stop_jobserver()


rule all:
    input:
        "report/index.html",
        "report/report.tex",
        ["prepared/data.dvc.log"] if uses_archives() else [],
        ["results/heavytail/quantiles.csv"] if config["heavytail"]["enabled"] else [],
        all_noise(),
    default_target: True
