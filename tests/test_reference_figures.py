"""The README's reference figures: each is there with its data, and the README names the commit
that measured them, as their metadata records it."""

from __future__ import annotations

import json
import re

from tests.conftest import REPO_ROOT

REFERENCE = REPO_ROOT / "plots" / "reference"
README = (REPO_ROOT / "README.md").read_text()


def test_every_figure_the_readme_shows_is_there_with_its_data() -> None:
    shown = re.findall(r"\]\(plots/reference/(\w+)\.png\)", README)
    assert shown, "the README shows no reference figure"
    for name in shown:
        for suffix in (".png", ".csv", ".json"):
            assert (REFERENCE / f"{name}{suffix}").is_file(), f"{name}{suffix} is missing"


def test_the_readme_names_the_commits_that_measured_the_reference_figures() -> None:
    commits = {json.loads(path.read_text())["commit"] for path in REFERENCE.glob("*.json")}
    # Clean commits only: "+changes" means code that no commit holds was measured.
    for commit in commits:
        assert re.fullmatch(r"[0-9a-f]{7,40}", commit), f"not a clean commit: {commit!r}"
    quoted = set(re.findall(r"at\s+commit\s+([0-9a-f]{7,40})", README))
    assert quoted == commits, f"the README quotes {quoted}, the figures say {commits}"
