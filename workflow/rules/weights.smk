# Pretrained weights are data: pinned in clipbench.data.sources, fetched (verified, resumed,
# from config["weights"]["mirrors"] when set) into data/weights/, which data.dvc versions.
# Training only reads them, so compute nodes need no internet.
import clipbench.data.weights as cb_weights


wildcard_constraints:
    weights_file="|".join(cb_weights.file_name(n) for n in cb_weights.NAMES),


def weights_for(wildcards):
    """The weights file a run needs as input: FCN-32s on VGG16 with pretrained: imagenet.
    With if_pretrained_missing: scratch (the offline switch) it is used when there, never fetched."""
    if wildcards.task != "segmentation":
        return []
    cfg = config["tasks"]["segmentation"]
    if cfg.get("model") != "fcn32s_vgg16" or cfg.get("pretrained") != "imagenet":
        return []
    if cfg.get("if_pretrained_missing", "fail") != "fail":
        return []
    return [f"{cb_weights.WEIGHTS_DIR}/{cb_weights.file_name('vgg16_imagenet')}"]


rule weights:
    output:
        f"{cb_weights.WEIGHTS_DIR}/{{weights_file}}",
    params:
        name=lambda wc: cb_weights.name_of(wc.weights_file),
        cfg=lambda wc: json.dumps(config.get("weights", {}), sort_keys=True),
    log:
        "results/logs/weights/{weights_file}.log",
    conda:
        "../../environment.yml"
    shell:
        "clipbench fetch-weights {params.name} --out {cb_weights.WEIGHTS_DIR} --json {params.cfg:q} > {log} 2>&1"
