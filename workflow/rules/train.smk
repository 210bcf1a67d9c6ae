# One run = one (task, method, seed). Its checkpoint.pt is deliberately not an output:
# Snakemake removes the outputs of a failed job, and the checkpoint is what lets
# `snakemake --rerun-incomplete` resume it.
# A run whose training fails (a crash, a kill) is recorded as failed (metrics.json of status
# "failed", failure.json) and the job succeeds: one bad run must not stop the other runs and
# the report, which lists it. Its failure's id is a param, so the next `snakemake` tries it again.
rule train:
    input:
        unpack(tuned_input),  # a tuned task's chosen setting (tuning.smk)
        manifest=manifest_for,
        noise=noise_init_for,
        plan=clip_plan_for,  # the predicted clipping, written before any training of the task
        weights=weights_for,
    output:
        metrics=f"{cb_runfiles.RUN_DIR}/{cb_runfiles.METRICS_JSON}",
        history=f"{cb_runfiles.RUN_DIR}/{cb_runfiles.HISTORY_CSV}",
    params:
        spec=run_spec_file,
        out=lambda wc: run_dir(wc.task, wc.method, wc.seed),
        data=lambda wc, input: f"--data {input.manifest}" if input.manifest else "",
        noise=lambda wc, input: f"--noise {input.noise}" if input.noise else "",
        launcher=train_launcher,
        tuned=lambda wc, input: f"--tuned {input.chosen}" if "chosen" in input.keys() else "",
        retry_of=lambda wc: cb_runfiles.failure_id(run_dir(wc.task, wc.method, wc.seed)),
    threads: train_threads
    priority: train_priority
    # What the SLURM profile turns into sbatch options (--gpus, --cpus-per-task, --mem, -t);
    # a local run only counts `gpu` against `--resources gpu=N`.
    resources:
        gpu=train_resource("gpus"),
        gpu_model=train_resource("gpu_model"),
        cpus_per_task=train_cpus,
        mem_mb=train_resource("mem_mb"),
        runtime=train_resource("runtime"),
    log:
        f"results/logs/train/{cb_runfiles.RUN_NAME}.log",
    benchmark:
        f"results/benchmarks/train/{cb_runfiles.RUN_NAME}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "{params.launcher} train --spec {params.spec} {params.data} {params.noise} {params.tuned}"
        " --out {params.out} > {log} 2>&1"
        " || clipbench record-failure --spec {params.spec} --out {params.out} --exit-code $? --log {log}"
