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


rule report:
    input:
        summary="results/summary.csv",
        histories=all_runs("history.csv"),
    output:
        html="report/index.html",
        tex="report/report.tex",
        figures=directory("report/figures"),
    log:
        "results/logs/report.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench report --summary {input.summary} --out report > {log} 2>&1"
