"""The README and docs/ hold together: every relative link resolves (the file, and a `#anchor` as a
heading of the target, by GitHub's rules), every docs page is in the README's index and opens by
saying what a reader gets from it, every test a page cites exists, the quoted Go report points at
the lines that block, and the README stays a learner's guide: at most 350 lines, no CPython
internals."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

# Names that the README uses for work being merged at the same time (issue 20): the lesson's own
# test file. Empty this set once tests/test_the_lesson.py is on the branch.
NOT_YET_MERGED: set[str] = set()

FENCE = re.compile(r"^```.*?^```[^\n]*$", flags=re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", flags=re.MULTILINE)


def without_code(text: str) -> str:
    """The text with fenced code blocks dropped, so that code is never read as a link or heading."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: the rendered text, lower case, punctuation dropped
    (letters, digits, `_`, `-` and spaces stay), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.replace("`", "").replace("*", "")  # code and emphasis show their content
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor in a page; a repeated one gets -1, -2, ... as on GitHub."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in HEADING.findall(without_code(text)):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """Each relative link of a page (its text, or `text`) whose file or anchor does not exist."""
    text = page.read_text() if text is None else text
    broken = []
    for target in LINK.findall(CODE_SPAN.sub("code", without_code(text))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if not path:  # a heading of this very page
            if anchor not in anchors(text):
                broken.append(f"{target}: no heading with that anchor here")
            continue
        resolved = (page.parent / path).resolve()
        if not resolved.is_relative_to(REPO_ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved.read_text())):
            broken.append(f"{target}: no heading with that anchor in {resolved.name}")
    return broken


def test_the_slugs_follow_githubs_rules() -> None:
    assert slug("Stage 2's deadlock, reported by Go's runtime") == (
        "stage-2s-deadlock-reported-by-gos-runtime"
    )
    assert slug("`make mutate`: do the tests catch a broken pool?") == (
        "make-mutate-do-the-tests-catch-a-broken-pool"
    )
    assert slug("Deadlines, cancel, max_errors, Ctrl-C: what happens to running tasks") == (
        "deadlines-cancel-max_errors-ctrl-c-what-happens-to-running-tasks"
    )


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor() -> None:
    # The check itself must be able to fail: a page of docs/ with good links, one to a file that
    # is not there, one to a heading that is not there, and a link-like code span (not a link).
    probe = (
        "# Probe\n\n## A heading\n\n"
        "[good](limits.md#the-wall) [here](#a-heading) [up](../README.md) [dir](../go)\n"
        "[file](nowhere.md) [anchor](limits.md#no-such-heading) [self](#nowhere)\n"
        "`[in code](nowhere.md)`\n"
        "```\n[in a block](nowhere.md)\n```\n"
    )
    assert broken_links(DOCS / "probe.md", probe) == [
        "nowhere.md: no such file",
        "limits.md#no-such-heading: no heading with that anchor in limits.md",
        "#nowhere: no heading with that anchor here",
    ]


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_relative_link_resolves_to_a_file_and_a_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_is_a_guide_of_at_most_350_lines() -> None:
    assert len(README.read_text().splitlines()) <= 350


def test_the_readme_names_no_cpython_internals() -> None:
    # The same grep as the issue's: internals belong in docs/.
    internals = re.findall(r"gh-[0-9]|_wait_for_tstate|futex|eval breaker", README.read_text())
    assert internals == []


def test_every_docs_page_is_in_the_readmes_index() -> None:
    linked = {
        (REPO_ROOT / target.partition("#")[0]).resolve()
        for target in LINK.findall(without_code(README.read_text()))
    }
    assert [page.name for page in PAGES[1:] if page.resolve() not in linked] == []
    assert len(PAGES) > 10


@pytest.mark.parametrize("page", PAGES[1:], ids=[page.name for page in PAGES[1:]])
def test_every_docs_page_opens_with_its_title_and_what_a_reader_gets(page: Path) -> None:
    title, blank, opening, *_ = page.read_text().splitlines()
    assert title.startswith("# ")
    assert blank == ""
    assert opening and not opening.startswith(("#", " ", "-", "|", "`", "!"))


def test_every_test_a_page_cites_exists() -> None:
    sources = "".join(path.read_text() for path in (REPO_ROOT / "tests").glob("test_*.py"))
    defined = set(re.findall(r"^\s*(?:async\s+)?def (test_\w+)", sources, flags=re.MULTILINE))
    files = {path.stem for path in (REPO_ROOT / "tests").glob("test_*.py")}
    for page in PAGES:
        cited = set(re.findall(r"\b(test_\w+)", page.read_text()))
        assert cited - defined - files - NOT_YET_MERGED == set(), page.name


def test_the_quoted_go_report_points_at_the_lines_that_block() -> None:
    # Go's report of stage 2's deadlock is quoted in the README and in full in the Go page: its
    # main.go:N references must still be main's wg.Wait(), a worker's error send, or the line
    # that starts the worker.
    source = (REPO_ROOT / "go" / "errors_channel" / "main.go").read_text().splitlines()
    blocking = {
        number
        for number, line in enumerate(source, start=1)
        if line.strip() in {"wg.Wait()", 'errs <- fmt.Errorf("error on job %d", job)'}
        or line.strip().startswith("go worker(")
    }
    assert len(blocking) == 3
    quoted = {
        page.name: {int(n) for n in re.findall(r"errors_channel/main\.go:(\d+)", page.read_text())}
        for page in (README, DOCS / "go-beside-python.md")
    }
    assert all(lines and lines <= blocking for lines in quoted.values()), quoted
