"""config/README.md describes every section of the config schema, and every config file."""
import re

import yaml


def test_every_schema_section_is_described(repo):
    schema = yaml.safe_load((repo / "workflow/schemas/config.schema.yaml").read_text())
    text = (repo / "config/README.md").read_text()
    described = set(re.findall(r"^### `([a-z_0-9]+)`", text, flags=re.M))
    assert set(schema["properties"]) - described == set(), "config/README.md: describe these sections"
    assert described - set(schema["properties"]) == set(), "config/README.md describes sections the schema lacks"
    # Each section says something (not a bare heading).
    for section in schema["properties"]:
        body = text.split(f"### `{section}`", 1)[1].split("\n### ", 1)[0]
        assert len(body.split()) >= 15, section


def test_every_config_file_is_listed(repo):
    text = (repo / "config/README.md").read_text()
    for path in sorted((repo / "config").glob("*.yaml")):
        assert f"`{path.name}`" in text, path.name
