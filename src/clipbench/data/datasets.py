"""The datasets ``clipbench prepare`` knows, by name: each module prepares its data and lists
the files its loader reads (``prepare``, ``data_files``)."""
from clipbench.data import div2k, imagenet100, voc2012

DATASETS = {"imagenet100": imagenet100, "voc2012": voc2012, "div2k": div2k}
