# What a training run needs besides its dataset: pretrained weights and CPU cores.
# Functions only (rules live in weights.smk and train.smk).
import os

import clipbench.data.weights as cb_weights

WEIGHTS_DIR = str(cb_weights.WEIGHTS_DIR)


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
    return [f"{WEIGHTS_DIR}/{cb_weights.file_name('vgg16_imagenet')}"]


def weights_name(wildcards):
    return cb_weights.name_of(wildcards.weights_file)


def weights_json(wildcards):
    return json.dumps(config.get("weights", {}), sort_keys=True)


def train_threads(wildcards):
    """Cores a run asks for: engine.threads, and one per loader worker of its task plus the
    training process (engine.loaders.<task>.num_workers over engine.num_workers)."""
    own = (ENGINE.get("loaders") or {}).get(wildcards.task) or {}
    workers = own.get("num_workers")
    workers = ENGINE["num_workers"] if workers is None else workers
    return max(ENGINE["threads"], workers + 1)
