rule prepare:
    output:
        "data/prepared/{dataset}/manifest.json",
    params:
        cfg=dataset_json,
    log:
        "results/logs/prepare/{dataset}.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench prepare {wildcards.dataset} --json {params.cfg:q}"
        " --out data/prepared/{wildcards.dataset} > {log} 2>&1"
