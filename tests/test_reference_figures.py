"""The reference figures in the README and the docs: each is there with its data, and the
benchmarks page names the commits that measured them, as their metadata records it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

REFERENCE = REPO_ROOT / "plots" / "reference"
README = REPO_ROOT / "README.md"
# The page that says which commit measured which figure.
BENCHMARKS = REPO_ROOT / "docs" / "benchmarks.md"
PAGES = [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


def reference_commits() -> set[str]:
    return {json.loads(path.read_text())["commit"] for path in REFERENCE.glob("*.json")}


def quoted_commits(text: str) -> set[str]:
    return set(re.findall(r"at\s+commit\s+([0-9a-f]{7,40})", text))


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_figure_a_page_shows_is_there_with_its_data(page: Path) -> None:
    shown = re.findall(r"\]\((?:\.\./)?plots/reference/(\w+)\.png\)", page.read_text())
    for name in shown:
        for suffix in (".png", ".csv", ".json"):
            assert (REFERENCE / f"{name}{suffix}").is_file(), f"{name}{suffix} is missing"


def test_the_readme_and_the_benchmarks_page_show_every_reference_figure() -> None:
    figures = {path.stem for path in REFERENCE.glob("*.png")}
    for page in (README, BENCHMARKS):
        shown = set(re.findall(r"\]\((?:\.\./)?plots/reference/(\w+)\.png\)", page.read_text()))
        # The failure matrix's figure is on its own page of the docs, and in the README.
        assert shown | ({"failures"} if page == BENCHMARKS else set()) == figures, page.name


def test_the_benchmarks_page_names_the_commits_that_measured_the_reference_figures() -> None:
    commits = reference_commits()
    # Clean commits only: "+changes" means code that no commit holds was measured.
    for commit in commits:
        assert re.fullmatch(r"[0-9a-f]{7,40}", commit), f"not a clean commit: {commit!r}"
    quoted = quoted_commits(BENCHMARKS.read_text())
    assert quoted == commits, f"the benchmarks page quotes {quoted}, the figures say {commits}"


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_no_page_quotes_a_commit_the_figures_do_not_come_from(page: Path) -> None:
    assert quoted_commits(page.read_text()) <= reference_commits()
