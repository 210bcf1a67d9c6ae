# Why clipping helps or not: the convex check where theory says it must.
rule heavytail:
    output:
        quantiles=report("results/heavytail/quantiles.csv", category="heavytail", caption="../report/heavytail_table.rst"),
        summary="results/heavytail/summary.json",
        figure=report("results/heavytail/quantiles.png", category="heavytail", caption="../report/heavytail.rst"),
    params:
        cfg=lambda wc: cb_spec.write("heavytail", cb_spec.heavytail_settings(config), "heavytail"),
    resources:
        **job_resources("heavytail"),
    log:
        "results/logs/heavytail.log",
    benchmark:
        "results/benchmarks/heavytail.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench heavytail --json {params.cfg} --out results/heavytail > {log} 2>&1"


# The gradient noise of each trained task: at initialisation (what {quantile: q} clip levels
# are set from, so the training runs that use one wait for it) and at the end of training.
# At initialisation it also predicts each clipped arm's share of clipped steps (clip_plan.json,
# before any training job of the task starts: they wait for it), and prints on the terminal a
# warning for each arm predicted to clip in under 1% of its steps.
rule noise_init:
    input:
        manifest_for,
    output:
        init="results/noise/{task}/init.json",
        figure=report("results/noise/{task}/noise_init.png", category="{task}", subcategory="gradient noise",
                      caption="../report/noise_init.rst"),
        plan=report("results/noise/{task}/clip_plan.json", category="{task}", subcategory="gradient noise",
                    caption="../report/clip_plan.rst"),
        detail="results/noise/{task}/clip_plan_detail.json",
    params:
        spec=lambda wc: noise_spec_file(wc.task),
        methods=lambda wc: plan_methods_file(wc.task),
        data=lambda wc, input: f"--data {input[0]}" if input else "",
    threads: ENGINE["threads"]
    priority: NOISE_PRIORITY
    resources:
        **job_resources("noise_init"),
    log:
        "results/logs/noise/{task}_init.log",
    benchmark:
        "results/benchmarks/noise/{task}_init.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench noise --spec {params.spec} {params.data} --methods {params.methods}"
        " --out results/noise/{wildcards.task} > {log} 2>&1"
        " && python -m clipbench.diagnostics.clip_plan --warn {output.detail}"


rule noise:
    input:
        unpack(noise_final_inputs),
    output:
        noise="results/noise/{task}/noise.json",
        figure=report("results/noise/{task}/noise_final.png", category="{task}", subcategory="gradient noise",
                      caption="../report/noise_final.rst"),
    params:
        spec=lambda wc: noise_spec_file(wc.task),
        methods=lambda wc: methods_file(wc.task),
        data=lambda wc, input: f"--data {input.manifest}" if "manifest" in input.keys() else "",
        runs=lambda wc: " ".join(noise_candidates(wc.task)),
    threads: ENGINE["threads"]
    priority: NOISE_PRIORITY
    resources:
        **job_resources("noise"),
    log:
        "results/logs/noise/{task}.log",
    benchmark:
        "results/benchmarks/noise/{task}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench noise --spec {params.spec} {params.data} --checkpoint-from {params.runs}"
        " --init {input.init} --methods {params.methods} --out results/noise/{wildcards.task} > {log} 2>&1"
