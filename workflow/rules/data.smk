# Archives (downloads, or tars the user brings) live in data/<dataset>/, which data.dvc
# versions; extracted and generated trees live in prepared/<dataset>/, which it does not.
rule prepare:
    output:
        "prepared/{dataset}/manifest.json",
    params:
        cfg=dataset_file,
    resources:
        **job_resources("prepare"),
    log:
        "results/logs/prepare/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare/{dataset}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench prepare {wildcards.dataset} --json {params.cfg}"
        " --out prepared/{wildcards.dataset} > {log} 2>&1"


rule datasets:
    input:
        all_manifests(),
    output:
        "prepared/datasets.txt",
    resources:
        **job_resources("datasets"),
    log:
        "results/logs/prepare/datasets.log",
    benchmark:
        "results/benchmarks/prepare/datasets.tsv"
    conda:
        "../../environment.yml"
    shell:
        "ls {input} > {output} 2> {log}"


# After archives were downloaded (or the user brought theirs into data/), data.dvc is
# brought up to date, so `dvc push` shares exactly what the runs used.
rule track_data:
    input:
        all_manifests(),
    output:
        "prepared/data.dvc.log",
    resources:
        **job_resources("track_data"),
    log:
        "results/logs/prepare/track_data.log",
    benchmark:
        "results/benchmarks/prepare/track_data.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench track-data data > {output} 2> {log}"
