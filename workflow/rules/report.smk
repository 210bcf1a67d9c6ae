rule collect:
    input:
        metrics=all_runs("metrics.json"),
        histories=all_runs("history.csv"),
    output:
        summary=report("results/summary.csv", category="overview", caption="../report/summary.rst"),
        metrics="results/metrics.json",
        metrics_dir=report(directory("results/metrics"), patterns=["{task}/{method}.json"], category="{task}",
                           subcategory="final metrics", caption="../report/metrics.rst", labels={"method": "{method}"}),
        plots=directory("results/plots"),
    resources:
        **job_resources("collect"),
    log:
        "results/logs/collect.log",
    benchmark:
        "results/benchmarks/collect.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench collect --out {output.summary} --dvc-metrics {output.metrics}"
        " --dvc-metrics-dir {output.metrics_dir} --dvc-plots {output.plots} {input.metrics} > {log} 2>&1"


# Training-free baselines on the same validation data as the runs, for the tasks whose registry
# entry names one (TaskInfo.baseline, a function of the task's module).
rule baseline:
    input:
        manifest=manifest_for,
    output:
        report("results/baselines/{task}.json", category="{task}", subcategory="baseline", caption="../report/baseline.rst"),
    params:
        cfg=lambda wc: task_file(wc.task),
    wildcard_constraints:
        task="|".join(registry.with_baseline()),
    resources:
        **job_resources("baseline"),
    log:
        "results/logs/baseline/{task}.log",
    benchmark:
        "results/benchmarks/baseline/{task}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench baseline {wildcards.task} --task-json {params.cfg} --data {input.manifest}"
        " --out {output} > {log} 2>&1"


# The report page's learning-curve figures, report/figures/<task>_<metric>.png (trained tasks only).
CURVE_FIGURE = "{task,%s}_{metric,[a-z0-9_]+}.png" % "|".join(registry.names())


# The report states what made it: the resolved config (its hash and text) and the prepared
# datasets' manifests (their digests); a change to either reruns it.
rule report:
    input:
        summary="results/summary.csv",
        histories=all_runs("history.csv"),
        baselines=baselines(),
        manifests=all_manifests(),
        noise=noise_inputs,
        heavytail=heavytail_inputs,
        tuning=all_chosen(),
    output:
        html=report("report/index.html", category="overview", caption="../report/page.rst"),
        tex="report/report.tex",
        claims="report/claims.json",
        # In Snakemake's report (snakemake --report report.zip): each trained task's curves under its name.
        figures=report(directory("report/figures"), patterns=[CURVE_FIGURE], category="{task}", subcategory="learning curves",
                       caption="../report/curves.rst", labels={"metric": "{metric}"}),
    params:
        # Without the settings that change no number (threads, scheduler requests): changing
        # one neither reruns the report nor changes the config hash it states.
        config=lambda wc: config_file(),
    threads: 2  # processes that draw the figures, the report's longest part; at most --cores
    resources:
        **job_resources("report"),
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench report --summary {input.summary} --baselines results/baselines --noise results/noise"
        " --heavytail results/heavytail --config-json {params.config} --manifests {input.manifests}"
        + (" --tuning results/tuning" if TUNED else "")
        + " --workers {threads} --out report > {log} 2>&1"
