"""`python -m plots`: measure every benchmark into CSV files, then draw the PNGs from them."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

from demo_args import DemoArgumentParser
from plots.draw import DRAWERS, draw_all
from plots.measure import Sizes, measure_all
from plots.workloads import WrongResults

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def out_folder(text: str) -> Path:
    """An argparse type: the folder for the data and figures. Not "": Path("") is the current
    folder, which nobody means by an empty --out (an unset shell variable, most likely)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got ''")
    return Path(text)


def main(argv: list[str] | None = None) -> int:
    parser = DemoArgumentParser(
        prog="python -m plots",
        description="Measure the stages and their peers (ThreadPoolExecutor, asyncio, "
        "multiprocessing), write NAME.csv and its metadata NAME.json for each benchmark, and draw "
        "NAME.png from them. Quick mode (the default) took 81 s on an idle 2-core "
        "machine, about 2 minutes at a load average of 14.",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="publication sizes: 100,000 dispatch tasks, 7 repeats, every worker count "
        "(about 20 minutes on 2 cores)",
    )
    parser.add_argument(
        "--redraw",
        action="store_true",
        help="do not measure: redraw the PNGs from the CSV files already in --out",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=list(DRAWERS),
        help="measure only this benchmark (repeatable; default: all)",
    )
    parser.add_argument(
        "--out",
        type=out_folder,
        default=DEFAULT_OUT,
        help=f"where the CSV, JSON and PNG files go (default: {DEFAULT_OUT})",
    )
    args = parser.parse_args(argv)

    if args.redraw:
        # Redrawing reads what a measuring run wrote there: a folder that is not there has
        # nothing to redraw, and is not made (a typo would otherwise leave an empty folder).
        if not any((args.out / f"{name}.csv").is_file() for name in DRAWERS):
            parser.fail(f"no benchmark CSV in {args.out}: measure first")
    else:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            # A folder can exist and still refuse files (/proc/self, a read-only mount): find out
            # now, with a file of our own, before minutes of measuring have nowhere to go.
            probe, probe_path = tempfile.mkstemp(dir=args.out, prefix=".plots-probe-")
            os.close(probe)
            os.unlink(probe_path)
        except OSError as error:
            parser.fail(f"cannot write files in --out {args.out}: {error.strerror}")
        sizes = Sizes.full() if args.full else Sizes.quick()
        if args.only:
            sizes = dataclasses.replace(sizes, benchmarks=tuple(args.only))
        started = time.monotonic()
        print(f"measuring ({sizes.mode} mode) into {args.out}", file=sys.stderr, flush=True)
        try:
            measure_all(args.out, sizes)
        except WrongResults as wrong:
            # A pool returned wrong results: that is a bug to report, not a time to plot.
            parser.exit(1, f"{parser.prog}: refused a run with wrong results: {wrong}\n")
        print(f"measured in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    try:
        written = draw_all(args.out)
    except FileNotFoundError as missing:
        parser.exit(2, f"{parser.prog}: error: {missing}\n")
    if not written:
        parser.exit(2, f"{parser.prog}: error: no benchmark CSV in {args.out}: measure first\n")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
