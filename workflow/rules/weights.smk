# Pretrained weights are data: pinned in clipbench.data.sources, fetched (verified, resumed,
# from config["weights"]["mirrors"] when set) into data/weights/, which data.dvc versions.
# Training only reads them, so compute nodes need no internet.
rule weights:
    output:
        f"{WEIGHTS_DIR}/{{weights_file}}",
    params:
        name=weights_name,
        cfg=weights_config_file,
        out=lambda wc, output: os.path.dirname(output[0]),
    resources:
        **job_resources("weights"),
    log:
        "results/logs/weights/{weights_file}.log",
    benchmark:
        "results/benchmarks/weights/{weights_file}.tsv"
    conda:
        "../../environment.yml"
    shell:
        "clipbench fetch-weights {params.name} --out {params.out} --json {params.cfg} > {log} 2>&1"
