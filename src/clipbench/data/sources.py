"""Pinned real sources of the datasets, as data.

Every archive lists its file name, the checksums it must match and the default mirror
base URLs (the file name is appended to a base).  A user's
``datasets.<name>.mirrors`` replaces the bases; the checksums always stay.

Where each value comes from (nothing here is invented):

* VOC2012 md5: torchvision ``torchvision/datasets/voc.py`` (``DATASET_YEAR_DICT['2012']``,
  checked against the installed torchvision 0.29.1).
  VOC2012 size: tensorflow-datasets ``tensorflow_datasets/url_checksums/voc.txt``, which
  also lists sha256 ``e14f763270cf193d0b5f74b169f44157a4b0c6efa708f4dd0ff78ee691763bcb``
  for the same file (pjreddie.com copy); it is not pinned because it was measured on a
  different mirror, and md5 + size already identify the file.
* SBD md5s and URLs: torchvision ``torchvision/datasets/sbd.py`` (0.29.1 and older).
* DIV2K size and sha256: tensorflow-datasets ``tensorflow_datasets/url_checksums/div2k.txt``
  (commit 333639b37af6c6fedf3610a4a2d42f1c6ef6f7d5), copied verbatim.
* ILSVRC2012 md5s: torchvision ``torchvision/datasets/imagenet.py`` (``ARCHIVE_META``, 0.29.1);
  train/val sizes: tensorflow-datasets ``url_checksums/imagenet2012.txt``, which also lists
  sha256 ``b08200a27a8e34218a0e58fde36b0fe8f73bc377f4acea2d91602057c3ca45bb`` (train) and
  ``c7e06a6c0baccf06d8dbeb6577d71efff84673a5dbdd50633ab44f8ea0456ae0`` (val).
"""

from __future__ import annotations

import copy
from pathlib import Path

# torchvision 0.29's address first (host.robots.ox.ac.uk is often down), then the
# addresses the VOC page has published over the years.
VOC_BASES = [
    "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/",
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
    "http://thor.robots.ox.ac.uk/pascal/VOC/voc2012/",
]

# The ETH server answers on both schemes; http first because it is the address the
# dataset's page publishes, https as a fallback for networks that block plain http.
DIV2K_BASES = [
    "http://data.vision.ee.ethz.ch/cvl/DIV2K/",
    "https://data.vision.ee.ethz.ch/cvl/DIV2K/",
]

SOURCES: dict[str, dict] = {
    "voc2012": {
        "description": "PASCAL VOC 2012 trainval (segmentation masks in SegmentationClass/)",
        "downloadable": True,
        "files": [
            {
                "name": "VOCtrainval_11-May-2012.tar",
                "md5": "6cd6e144f989b92b3379bac3b3de84fd",
                "sha256": None,
                "size": 1999639040,
                "mirrors": VOC_BASES,
                "extract": True,
            },
        ],
    },
    # Semantic Boundaries Dataset: extra VOC-style masks, off by default.
    "sbd": {
        "description": "SBD (Hariharan et al. 2011) augmented VOC segmentation masks",
        "downloadable": True,
        "files": [
            {
                "name": "benchmark.tgz",
                "md5": "82b4d87ceb2ed10f6038a1cba92111cb",
                "sha256": None,
                "size": None,
                "mirrors": [  # torchvision 0.29's address, then the older one
                    "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/",
                    "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/",
                ],
                "extract": True,
            },
            {
                # SBD train images minus every VOC2012 val image, so that VOC val stays unseen.
                "name": "train_noval.txt",
                "md5": "79bff800c5f0b1ec6b21080a3c066722",
                "sha256": None,
                "size": None,
                "mirrors": [
                    "https://www.cs.cornell.edu/~bharathh/",
                    "http://home.bharathh.info/pubs/codes/SBD/",
                ],
                "extract": False,
            },
        ],
    },
    "div2k": {
        "description": "DIV2K 800 train / 100 valid HR images and their bicubic x4 LR versions",
        "downloadable": True,
        "files": [
            {
                "name": "DIV2K_train_HR.zip",
                "md5": None,
                "sha256": "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
                "size": 3530603713,
                "mirrors": DIV2K_BASES,
                "extract": True,
            },
            {
                "name": "DIV2K_valid_HR.zip",
                "md5": None,
                "sha256": "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
                "size": 448993893,
                "mirrors": DIV2K_BASES,
                "extract": True,
            },
            {
                "name": "DIV2K_train_LR_bicubic_X4.zip",
                "md5": None,
                "sha256": "f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a",
                "size": 246914039,
                "mirrors": DIV2K_BASES,
                "extract": True,
            },
            {
                "name": "DIV2K_valid_LR_bicubic_X4.zip",
                "md5": None,
                "sha256": "a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553",
                "size": 31505881,
                "mirrors": DIV2K_BASES,
                "extract": True,
            },
        ],
    },
    # The ImageNet licence forbids redistribution: the user obtains these from image-net.org.
    "imagenet": {
        "description": "ILSVRC2012 classification (the source of ImageNet-100)",
        "downloadable": False,
        "homepage": "https://image-net.org/download.php",
        "files": [
            {
                "name": "ILSVRC2012_img_train.tar",
                "md5": "1d675b47d978889d74fa0da5fadfb00e",
                "sha256": None,
                "size": 147897477120,
                "mirrors": [],
                "extract": False,
            },
            {
                "name": "ILSVRC2012_img_val.tar",
                "md5": "29b22e2961454d5413ddabcf34fc5622",
                "sha256": None,
                "size": 6744924160,
                "mirrors": [],
                "extract": False,
            },
            {
                "name": "ILSVRC2012_devkit_t12.tar.gz",
                "md5": "fa75699e90414af021442c21a62c3abf",
                "sha256": None,
                "size": None,
                "mirrors": [],
                "extract": False,
            },
        ],
    },
}


def files(dataset: str) -> list[dict]:
    """A deep copy of the pinned file entries of ``dataset`` (callers may edit it)."""
    try:
        entry = SOURCES[dataset]
    except KeyError:
        raise KeyError(
            f"unknown dataset {dataset!r} in clipbench.data.sources.SOURCES; "
            f"known: {', '.join(sorted(SOURCES))}"
        ) from None
    return copy.deepcopy(entry["files"])


def archive_dir(dataset: str, cfg: dict) -> Path:
    """Where a dataset's archives live: ``datasets.<name>.archives``, default ``data/<name>``
    (the folder DVC versions)."""
    return Path(cfg.get("archives") or f"data/{dataset}")
