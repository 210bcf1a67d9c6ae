# Why clipping helps or not: the convex check where theory says it must.
rule heavytail:
    output:
        quantiles="results/heavytail/quantiles.csv",
        summary="results/heavytail/summary.json",
        figure="results/heavytail/quantiles.png",
    params:
        cfg=lambda wc: task_json("heavytail"),
    log:
        "results/logs/heavytail.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench heavytail --json {params.cfg:q} --out results/heavytail > {log} 2>&1"
