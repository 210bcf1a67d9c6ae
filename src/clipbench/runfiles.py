"""What a run folder holds, in names both its writer (the engine) and its readers (the
report, DVC's views) use; importable without torch."""

METRICS_JSON = "metrics.json"
HISTORY_CSV = "history.csv"
CHECKPOINT = "checkpoint.pt"
HISTORY_FIELDS = ("step", "epoch", "split", "metric", "value")
# Splits of history.csv whose rows are the task's metrics (the others: "train_step" losses).
# "val_x": a method whose output is not its gradient point (SSTM: y) is also evaluated at x.
TASK_SPLITS = ("train", "val", "val_x")
# Rows of split "train" that describe the optimizer, not the task: the epoch's clipping
# statistics (ClipStats in engine/telemetry.py) and the learning rate.
CLIP_METRICS = ("clip_fraction", "clip_scale_mean", "clip_entry_fraction")
TELEMETRY_METRICS = CLIP_METRICS + ("lr",)
