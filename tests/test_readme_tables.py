"""`clipbench readme` writes the README's demo tables from a run's outputs."""
import pytest

from clipbench import cli
from clipbench.report import render
from tests._reportfixture import make_runs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    fx = make_runs(root)
    (root / "results").mkdir()
    for name in ("summary.csv",):
        (root / "results" / name).write_text((root / name).read_text())
    (root / "results" / "baselines").symlink_to(fx["baselines"])
    (root / "results" / "heavytail").symlink_to(fx["heavytail"])
    render.build_report(fx["summary_csv"], root / "report", baselines=fx["baselines"], config=fx["config"],
                        manifests=fx["manifests"], noise=fx["noise"], heavytail=fx["heavytail"])
    return root


def test_blocks_are_written_from_the_results(run):
    readme = run / "README.md"
    readme.write_text("# x\n\n<!-- clipbench:results -->\nstale\n<!-- /clipbench:results -->\n\ntext kept\n\n"
                      "<!-- clipbench:verdicts -->\n<!-- /clipbench:verdicts -->\n"
                      "<!-- clipbench:noise -->\n<!-- /clipbench:noise -->\n"
                      "<!-- clipbench:convex -->\n<!-- /clipbench:convex -->\n")
    assert cli.main(["readme", "--readme", str(readme), "--results", str(run / "results"),
                     "--claims", str(run / "report" / "claims.json")]) == 0
    text = readme.read_text()
    assert "stale" not in text and "text kept" in text
    # Classification: clipped-SGD's mean top-1 over its seeds (0.565) is the best, in bold; chance beside it.
    assert "**0.565**" in text and "chance 0.100" in text
    assert "| Classification" in text or "| classification" in text.lower()
    assert "steps clipped" in text and "40.0%" in text
    assert "clipped-SGD − SGD" in text and "better" in text  # the twin claim's verdict
    assert "heavier than Gaussian" in text  # the fixture's segmentation tail-index claim
    assert "Under heavy-tailed noise the q99 of clipped-SSTM" in text


def test_a_readme_without_blocks_is_an_error(run, capsys):
    readme = run / "PLAIN.md"
    readme.write_text("# nothing to fill\n")
    assert cli.main(["readme", "--readme", str(readme), "--results", str(run / "results"),
                     "--claims", str(run / "report" / "claims.json")]) == 1
    assert "no <!-- clipbench:NAME -->" in capsys.readouterr().err
    assert readme.read_text() == "# nothing to fill\n"


def test_variation_compares_a_second_run(run, tmp_path):
    import json

    import pandas as pd

    other = tmp_path / "other"
    (other / "results").mkdir(parents=True)
    (other / "report").mkdir()
    summary = pd.read_csv(run / "results" / "summary.csv")
    main = (summary["task"] == "classification") & (summary["metric"] == "top1") & (summary["split"] == "val")
    summary.loc[main, "value"] += 0.002  # another machine's kernels: a small shift
    summary.to_csv(other / "results" / "summary.csv", index=False)
    records = json.loads((run / "report" / "claims.json").read_text())["claims"]
    flipped = next(c for c in records if c["kind"] == "paired")
    flipped_other = {**flipped, "verdict": "undecided"}
    (other / "report" / "claims.json").write_text(json.dumps(
        {"claims": [flipped_other if c is flipped else c for c in records]}))
    readme = run / "VAR.md"
    readme.write_text("<!-- clipbench:variation -->\n<!-- /clipbench:variation -->\n")
    assert cli.main(["readme", "--readme", str(readme), "--results", str(run / "results"),
                     "--claims", str(run / "report" / "claims.json"), "--other", str(other),
                     "--other-note", "Second run with other CPU kernels. "]) == 0
    text = readme.read_text()
    assert "Second run with other CPU kernels." in text and "2.00e-03" in text
    assert "are the same in both runs" in text and "These differ" in text
