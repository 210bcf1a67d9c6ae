# Tuning (config `tuning:`): every method of a tuned task gets the same number of trials, each
# a training job like `train` (so a cluster runs them in parallel), trained on the training
# data less a held-out split and scored on that split. `tune_select` keeps the best setting
# per (task, method) in chosen.json; the runs of run.seeds then train with it (train.smk).
# The trials of a task share its dataset's preparation (one manifest).

rule tune_trial:
    input:
        manifest=manifest_for,
        noise=noise_init_for,  # a {quantile: q} clip level is resolved as for the runs
    output:
        metrics="results/tuning/{task}/{method}/trial{trial}/metrics.json",
        history="results/tuning/{task}/{method}/trial{trial}/history.csv",
    params:
        spec=trial_spec_file,
        out=lambda wc: cb_tuning.trial_dir(wc.task, wc.method, wc.trial),
        data=lambda wc, input: f"--data {input.manifest}" if input.manifest else "",
        noise=lambda wc, input: f"--noise {input.noise}" if input.noise else "",
    wildcard_constraints:
        trial=r"\d+",
    threads: ENGINE["threads"]
    # A trial is a one-process training run: memory and time as the task's training jobs.
    resources:
        gpu=ENGINE["gpus"],
        gpu_model=train_resource("gpu_model"),
        cpus_per_task=lambda wc, threads: train_resources(wc.task)["cpus_per_task"] or threads,
        mem_mb=train_resource("mem_mb"),
        runtime=train_resource("runtime"),
    log:
        "results/logs/tuning/{task}/{method}/trial{trial}.log",
    benchmark:
        "results/benchmarks/tuning/{task}/{method}/trial{trial}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench train --spec {params.spec} {params.data} {params.noise} --out {params.out} > {log} 2>&1"


rule tune_select:
    input:
        lambda wc: [f"{cb_tuning.trial_dir(wc.task, wc.method, i)}/metrics.json" for i in range(trial_count(wc.task))],
    output:
        "results/tuning/{task}/{method}/chosen.json",
    params:
        tolerance=lambda wc: cb_tuning.task_tuning(config, wc.task)["tolerance"],
    resources:
        **job_resources("tune_select"),
    log:
        "results/logs/tuning/{task}/{method}/select.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench tune-select --task {wildcards.task} --method {wildcards.method}"
        " --tolerance {params.tolerance} --out {output} {input} > {log} 2>&1"
