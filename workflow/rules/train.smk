# One run = one (task, method, seed). Its checkpoint.pt is deliberately not an output:
# Snakemake removes the outputs of a failed job, and the checkpoint is what lets
# `snakemake --rerun-incomplete` resume it.
rule train:
    input:
        manifest=manifest_for,
        noise=noise_init_for,
        weights=weights_for,
    output:
        metrics="results/runs/{task}/{method}/seed{seed}/metrics.json",
        history="results/runs/{task}/{method}/seed{seed}/history.csv",
    params:
        spec=run_spec_json,
        out=lambda wc: run_dir(wc.task, wc.method, wc.seed),
        data=lambda wc, input: f"--data {input.manifest}" if input.manifest else "",
        noise=lambda wc, input: f"--noise {input.noise}" if input.noise else "",
    threads: train_threads
    resources:
        gpu=ENGINE["gpus"],
    log:
        "results/logs/train/{task}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{task}/{method}/seed{seed}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench train --spec {params.spec:q} {params.data} {params.noise} --out {params.out} > {log} 2>&1"
