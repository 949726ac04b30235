"""Every command answers --help, and refuses an unknown flag on one line with status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from demo_args import MAX_JOBS, MAX_WORK_SECONDS, MAX_WORKERS
from tests.conftest import REPO_ROOT, run_module

COMMANDS = ["naive", "errors_channel", "robust", "beyond", "families", "plots", "plots.child"]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_has_help(module: str) -> None:
    completed = run_module(module, "--help")
    assert completed.returncode == 0
    assert completed.stdout.startswith("usage: python -m ")


@pytest.mark.parametrize("module", ["naive", "errors_channel", "robust", "beyond", "plots"])
def test_every_command_refuses_an_unknown_flag_on_one_line(module: str) -> None:
    completed = run_module(module, "--frobnicate")
    assert completed.returncode == 2
    assert len(completed.stderr.splitlines()) == 1
    assert "unrecognized arguments: --frobnicate" in completed.stderr


POOL_COMMANDS = ["naive", "errors_channel", "robust", "beyond"]


@pytest.mark.parametrize("module", POOL_COMMANDS)
@pytest.mark.parametrize(
    "bad_args",
    [
        ["--workers", str(MAX_WORKERS + 1)],
        ["--workers", "99999999999999999999"],
        ["--jobs", str(MAX_JOBS + 1)],
        ["--jobs", "99999999999999999999999999999"],
        ["--work-seconds", str(MAX_WORK_SECONDS + 1)],
        # time.sleep() raises OverflowError past about 9.2e9 s: that would end a worker thread.
        ["--work-seconds", "1e300"],
    ],
    ids=[
        "workers-over-limit",
        "workers-absurd",
        "jobs-over-limit",
        "jobs-absurd",
        "work-seconds-over-limit",
        "work-seconds-absurd",
    ],
)
def test_demo_refuses_sizes_over_its_limits_at_once_with_one_line(
    module: str, bad_args: list[str]
) -> None:
    # Before any thread starts or any job is queued: a short timeout, and nothing on stdout.
    completed = run_module(module, "--work-seconds", "0", *bad_args, timeout=10)

    assert completed.returncode == 2
    assert completed.stdout == ""
    (line,) = completed.stderr.splitlines()
    assert f"argument {bad_args[0]}: must be at most " in line


@pytest.mark.parametrize("module", POOL_COMMANDS)
def test_demo_help_states_the_limits(module: str) -> None:
    completed = run_module(module, "--help")

    # argparse wraps help text, so compare without line breaks.
    help_text = " ".join(completed.stdout.split())
    assert f"at most {MAX_WORKERS:,}" in help_text
    assert f"at most {MAX_JOBS:,}" in help_text
    assert f"at most {MAX_WORK_SECONDS:,}" in help_text


@pytest.mark.parametrize(
    "command", [["naive"], ["errors_channel", "--fix", "drain-while-waiting"]], ids=lambda c: c[0]
)
def test_demo_piped_into_a_reader_that_quits_early_still_ends_quietly(command: list[str]) -> None:
    # `python -m naive | head -1`: far more output than a pipe holds, and the reader leaves after
    # the first line. A worker that died of BrokenPipeError would leave main waiting forever.
    child = subprocess.Popen(
        [sys.executable, "-m", *command, "--jobs", "5000", "--work-seconds", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline().startswith("worker ")
    child.stdout.close()
    try:
        returncode = child.wait(timeout=30)
    finally:
        child.kill()
    assert returncode == 0
    assert child.stderr.read() == ""
    child.stderr.close()
