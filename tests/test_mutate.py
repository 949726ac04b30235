"""The mutation table (tools/mutate.py, `make mutate`) still fits the code it mutates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tools.mutate import MUTANTS, Mutant, main, stale


def test_every_mutants_snippet_occurs_exactly_once_in_its_file() -> None:
    # A change to a pool that moves or rewords a mutated line must update the table with it.
    assert stale(MUTANTS) == []


def test_a_snippet_that_is_gone_or_repeated_makes_the_table_stale(tmp_path: Path) -> None:
    (tmp_path / "pool.py").write_text("a = 1\nb = 2\nb = 2\n")
    (tmp_path / "test_pool.py").write_text("")
    gone = Mutant("gone", "pool.py", (("c = 3", "c = 4"),), ("test_pool.py",))
    repeated = Mutant("repeated", "pool.py", (("b = 2", "b = 3"),), ("test_pool.py",))
    fits = Mutant("fits", "pool.py", (("a = 1", "a = 2"),), ("test_pool.py",))
    assert stale([gone, repeated, fits], tmp_path) == [
        "gone: its snippet occurs 0 times in pool.py",
        "repeated: its snippet occurs 2 times in pool.py",
    ]


def test_the_issues_named_mutants_are_in_the_table() -> None:
    names = {mutant.name for mutant in MUTANTS}
    assert {
        "robust-ctrl-c-does-not-wait-for-running-workers",
        "robust-starts-concurrency-threads-however-few-tasks",
        "robust-reraises-the-last-panic-not-the-first",
        "watchdog-timed-condition-wait-counts-as-asleep",
        "watchdog-notified-waiter-counts-as-asleep",
        "watchdog-grace-period-ignored",
        "watchdog-timed-join-counts-as-asleep",
        "watchdog-waiter-identity-check-removed",
        "watchdog-every-has-it-moved-guard-removed",
    } <= names


def test_an_unknown_mutant_name_is_refused_with_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--only", "no-such-mutant", "--check"])
    assert exited.value.code == 2
    assert "no mutant is named no-such-mutant" in capsys.readouterr().err


def development_notes() -> str:
    return (REPO_ROOT / "docs" / "development.md").read_text()


def test_every_test_the_development_notes_cite_exists() -> None:
    cited = set(re.findall(r"\b(test_\w+)", development_notes()))
    sources = "".join(path.read_text() for path in (REPO_ROOT / "tests").glob("test_*.py"))
    defined = set(re.findall(r"^def (test_\w+)", sources, flags=re.MULTILINE))
    files = {path.stem for path in (REPO_ROOT / "tests").glob("test_*.py")}
    assert len(cited) > 10
    assert cited - defined - files == set()


def test_every_mutant_the_development_notes_name_is_in_the_table() -> None:
    prefixes = "robust|ec|fix|go|naive|watchdog|beyond|plugin|processes|pipelined|asyncio|dask"
    named = set(re.findall(rf"`((?:{prefixes})-[a-z-]+)`", development_notes()))
    assert named
    assert named - {mutant.name for mutant in MUTANTS} == set()


def test_every_mutant_that_may_survive_is_listed_in_the_development_notes() -> None:
    notes = development_notes()
    assert [m.name for m in MUTANTS if m.survives and f"`{m.name}`" not in notes] == []
