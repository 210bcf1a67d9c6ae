"""A non-editable install carries every data file the package reads at run time."""
import subprocess
import sys
import zipfile

import pytest

from tests._checkout import REPO


@pytest.mark.slow
def test_wheel_has_the_package_data(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("clipbench-*.whl"))).namelist())
    for f in ("resources/config.schema.yaml", "resources/imagenet100_first100.txt", "resources/imagenet100_cmc.txt",
              "resources/templates/index.html.j2", "resources/templates/report.tex.j2", "report/published.yaml",
              "tasks/schemas/segmentation.yaml", "data/schemas/div2k.yaml"):
        assert f"clipbench/{f}" in names, f
