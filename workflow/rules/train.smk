# One run = one (task, method, seed). Its checkpoint.pt is deliberately not an output:
# Snakemake removes the outputs of a failed job, and the checkpoint is what lets
# `snakemake --rerun-incomplete` resume it.
rule train:
    input:
        manifest_for,
        unpack(tuned_input),  # a tuned task's chosen setting (tuning.smk)
    output:
        metrics="results/runs/{task}/{method}/seed{seed}/metrics.json",
        history="results/runs/{task}/{method}/seed{seed}/history.csv",
    params:
        spec=run_spec_json,
        out=lambda wc: run_dir(wc.task, wc.method, wc.seed),
        data=lambda wc, input: f"--data {input[0]}" if dataset_of(wc.task) else "",
        tuned=lambda wc, input: f"--tuned {input.chosen}" if "chosen" in input.keys() else "",
    threads: ENGINE["threads"]
    resources:
        gpu=ENGINE["gpus"],
    log:
        "results/logs/train/{task}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{task}/{method}/seed{seed}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench train --spec {params.spec:q} {params.data} {params.tuned} --out {params.out} > {log} 2>&1"
