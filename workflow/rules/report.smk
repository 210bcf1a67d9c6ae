rule collect:
    input:
        all_runs("metrics.json"),
    output:
        "results/summary.csv",
    log:
        "results/logs/collect.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench collect --out {output} {input} > {log} 2>&1"


rule report:
    input:
        summary="results/summary.csv",
        histories=all_runs("history.csv"),
    output:
        html="report/index.html",
        tex="report/report.tex",
    log:
        "results/logs/report.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench report --summary {input.summary} --out report > {log} 2>&1"
