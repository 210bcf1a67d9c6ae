"""Snakemake's own report: outputs marked with report() have their caption in workflow/report/,
and each trained task's figures fall in a category named after the task."""
import re


def _rules(repo) -> str:
    return "\n".join(p.read_text() for p in sorted((repo / "workflow/rules").glob("*.smk")))


def test_every_caption_exists_and_every_caption_file_is_used(repo):
    text = _rules(repo)
    used = set(re.findall(r'caption="\.\./report/([\w.-]+\.rst)"', text))
    assert used, "no output is marked with report(caption=...)"
    made = {p.name for p in (repo / "workflow/report").glob("*.rst")}
    assert used - made == set(), "captions missing from workflow/report/"
    # workflow.rst is the report's front page, named in the Snakefile.
    assert 'report: "workflow/report/workflow.rst"' in (repo / "Snakefile").read_text()
    assert made - used == {"workflow.rst"}, "caption files no rule uses"


def test_per_task_outputs_are_categorised_by_task(repo):
    text = _rules(repo)
    for path in ("results/noise/{task}/noise_init.png", "results/noise/{task}/noise_final.png",
                 "results/baselines/{task}.json"):
        assert re.search(re.escape(f'report("{path}"') + r'[^)]*category="\{task\}"', text), path
    assert re.search(r'report\(directory\("report/figures"\)[^)]*category="\{task\}"', text)
    assert re.search(r'report\("results/heavytail/quantiles.png"[^)]*category="heavytail"', text)
