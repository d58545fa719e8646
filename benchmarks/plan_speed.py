"""Planning time of the workflow: `snakemake -n` (a dry run, nothing is built) on the paper
config (about 3,700 jobs) and on the test config for contrast, each run a fresh subprocess.
Prints the wall seconds and the CPU seconds (the child's user + sys, os.wait4) of every run,
then min and median per checkout and config. CPU seconds are the figure to compare on a
busy machine; wall time is what a user waits.

Target: the paper config plans in under 10 CPU seconds.

`--tree DIR` (repeatable) plans in other checkouts as well, e.g. a copy of the rules before
a change, interleaving the runs so that both see the same load; the summary then gives each
checkout's median CPU time as a ratio to the first one's.

    .venv/bin/python benchmarks/plan_speed.py [--repeat 3] [--tree /tmp/before] [--tree .]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def plan(tree: Path, snakemake: Path, configfile: str, targets: list[str]) -> dict:
    """One dry run in `tree`: wall and CPU seconds, and the job count of its Job stats."""
    # targets first: --configfile takes every argument after it
    cmd = [str(snakemake), "-n", *targets, "--configfile", configfile]
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tree, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} in {tree} failed ({proc.returncode}):\n{text[-3000:]}")
    total = re.search(r"^total\s+(\d+)\s*$", text, flags=re.M)
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "jobs": int(total.group(1)) if total else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per checkout and config")
    ap.add_argument(
        "--config",
        action="append",
        help="config file, relative to the checkout (default: config/paper.yaml and "
        "config/test.yaml)",
    )
    ap.add_argument(
        "--tree",
        action="append",
        type=Path,
        help="checkout to plan in (default: this one); repeat to compare checkouts",
    )
    ap.add_argument("--snakemake", type=Path, default=ROOT / ".venv" / "bin" / "snakemake")
    ap.add_argument("targets", nargs="*", help="targets (default: the workflow's default)")
    args = ap.parse_args()
    configs = args.config or ["config/paper.yaml", "config/test.yaml"]
    trees = [t.resolve() for t in (args.tree or [ROOT])]

    results: dict[tuple[str, str], list[dict]] = {(str(t), c): [] for t in trees for c in configs}
    print(f"snakemake -n {' '.join(args.targets)} --configfile <config>, {args.repeat} runs each")
    print(f"{'checkout':40} {'config':20} {'run':>3} {'jobs':>6} {'wall s':>8} {'cpu s':>8}")
    # round robin over checkouts and configs: a change of load hits every one alike
    for run in range(args.repeat):
        for config in configs:
            for tree in trees:
                r = plan(tree, args.snakemake, config, args.targets)
                results[(str(tree), config)].append(r)
                print(
                    f"{str(tree):40} {config:20} {run + 1:>3} {r['jobs']:>6}"
                    f" {r['wall']:>8.2f} {r['cpu']:>8.2f}",
                    flush=True,
                )

    print()
    print(
        f"{'checkout':40} {'config':20} {'jobs':>6} {'wall min':>9} {'wall med':>9}"
        f" {'cpu min':>8} {'cpu med':>8} {'cpu ratio':>9}"
    )
    for config in configs:
        first = None
        for tree in trees:
            runs = results[(str(tree), config)]
            wall = [r["wall"] for r in runs]
            cpu = [r["cpu"] for r in runs]
            median = statistics.median(cpu)
            first = median if first is None else first
            print(
                f"{str(tree):40} {config:20} {runs[0]['jobs']:>6} {min(wall):>9.2f}"
                f" {statistics.median(wall):>9.2f} {min(cpu):>8.2f} {median:>8.2f}"
                f" {median / first:>9.2f}"
            )


if __name__ == "__main__":
    main()
