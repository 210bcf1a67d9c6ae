"""The small super-resolution config of the multi-GPU (torchrun) workflow tests, which run it
locally (tests/test_slurm_ddp.py) and on a SLURM cluster (tests/test_slurm.py): ``config`` builds
it, ``checkout`` makes a scratch checkout with it as small.yaml; ``RUN`` / ``CLIPPED_RUN`` are
the run folders of its SGD and clipped-SGD runs."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from tests._checkout import scratch_checkout

RUN = "results/runs/superres/sgd/seed0"
CLIPPED_RUN = "results/runs/superres/clipped_sgd/seed0"
# Super-resolution with ESPCN: no batch norm, so per-process batches take exactly the steps of
# the global batch; 2 validation images, one per process.
CONFIG = {
    "run": {"tasks": ["superres"], "methods": ["sgd"], "seeds": [0]},
    "engine": {"device": "cpu", "threads": 1, "gpus": 2, "dvclive": False},
    "datasets": {"div2k": {"source": "synthetic", "synthetic": {
        "train_images": 4, "valid_images": 2, "hr_size": 64, "scale": 4, "seed": 0}}},
    "tasks": {"superres": {
        "model": "espcn", "scale": 4, "patch_size": 8, "repeat": 4, "val_crop": None,
        "epochs": 2, "batch_size": 4, "eval_batch_size": 1,
        "methods": {"sgd": {"lr": 0.05, "momentum": 0.9}}}},
}


# ESPCN's gradient norm here is about 1e-3: a level of 2e-4 clips every step (scale ~0.2).
CLIPPED_SGD = {"lr": 0.5, "momentum": 0.9, "clipping": "norm", "clip_level": 2e-4}


def config(clipped: bool = False, **engine) -> dict:
    """The small config; ``clipped``: clipped-SGD (active norm clipping) runs beside SGD."""
    cfg = copy.deepcopy(CONFIG)
    cfg["engine"].update(engine)
    if clipped:
        cfg["run"]["methods"].append("clipped_sgd")
        cfg["tasks"]["superres"]["methods"]["clipped_sgd"] = dict(CLIPPED_SGD)
    return cfg


def checkout(root: Path, cfg: dict) -> Path:
    repo = scratch_checkout(root)
    (repo / "small.yaml").write_text(yaml.safe_dump(cfg))
    return repo
