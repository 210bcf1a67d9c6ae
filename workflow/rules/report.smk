rule collect:
    input:
        metrics=all_runs("metrics.json"),
        histories=all_runs("history.csv"),
    output:
        summary="results/summary.csv",
        metrics="results/metrics.json",
        plots=directory("results/plots"),
    log:
        "results/logs/collect.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench collect --out {output.summary} --dvc-metrics {output.metrics}"
        " --dvc-plots {output.plots} {input.metrics} > {log} 2>&1"


# Training-free baselines on the same validation data as the runs, for the tasks whose INFO
# names one (superres: bicubic).
rule baseline:
    input:
        manifest=manifest_for,
    output:
        "results/baselines/{task}.json",
    params:
        cfg=lambda wc: json.dumps({k: v for k, v in config["tasks"][wc.task].items() if k != "methods"}, sort_keys=True),
    wildcard_constraints:
        task="|".join(registry.with_baseline()),
    log:
        "results/logs/baseline/{task}.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench baseline {wildcards.task} --task-json {params.cfg:q} --data {input.manifest}"
        " --out {output} > {log} 2>&1"


rule report:
    input:
        summary="results/summary.csv",
        histories=all_runs("history.csv"),
        baselines=baselines(),
        tuning=all_chosen(),
    output:
        html="report/index.html",
        tex="report/report.tex",
        figures=directory("report/figures"),
    log:
        "results/logs/report.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench report --summary {input.summary} --baselines results/baselines"
        + (" --tuning results/tuning" if TUNED else "")
        + " --out report > {log} 2>&1"
