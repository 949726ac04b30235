"""Every command answers --help, and refuses an unknown flag on one line with status 2."""

from __future__ import annotations

import pytest

from tests.conftest import run_module

COMMANDS = ["naive", "errors_channel", "robust", "plots", "plots.child"]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_has_help(module: str) -> None:
    completed = run_module(module, "--help")
    assert completed.returncode == 0
    assert completed.stdout.startswith("usage: python -m ")


@pytest.mark.parametrize("module", ["naive", "errors_channel", "robust", "plots"])
def test_every_command_refuses_an_unknown_flag_on_one_line(module: str) -> None:
    completed = run_module(module, "--frobnicate")
    assert completed.returncode == 2
    assert len(completed.stderr.splitlines()) == 1
    assert "unrecognized arguments: --frobnicate" in completed.stderr
