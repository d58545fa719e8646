"""Where a run of the embedded default spends its time (issue 21 item 8): the README's second
command, `snakemake --cores 2`, timed as a whole, and each stage's window read from
Snakemake's own log.

Runs `.venv/bin/snakemake --cores N` (the default config, or `--configfile`) with its log
captured, then prints per rule: jobs, the minute its first job started and its last job
finished (from the run's start; jobs of different rules overlap), and the summed wall
minutes of its jobs; then the run's wall and CPU seconds (this process's children: Snakemake
and every job under it, engines included) and the engine start-ups the jobs' counts report.
`--from-log` reads the log of an earlier run instead (a run stopped early gives its stages so
far).

    .venv/bin/python benchmarks/default_run.py --results results/default-timed
    .venv/bin/python benchmarks/default_run.py --from-log results/default-timed.snakemake.log
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
STARTED = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_windows(log_lines: list[str]) -> dict[int, dict]:
    """{jobid: {rule, start, end}} (datetimes; end None while running) from a Snakemake log:
    each job's `rule X:` block follows a timestamp line and names its jobid; `Finished
    jobid: N (Rule: X)` follows the timestamp of its end."""
    jobs: dict[int, dict] = {}
    stamp = None
    rule = None
    for line in log_lines:
        line = line.rstrip("\n")
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        if m := STARTED.match(line):
            rule = m.group(1)
            continue
        if rule and (m := JOBID.match(line)):
            jobs[int(m.group(1))] = {"rule": rule, "start": stamp, "end": None}
            rule = None
            continue
        if m := FINISHED.match(line):
            job = jobs.get(int(m.group(1)))
            if job is not None:
                job["end"] = stamp
    return jobs


def stage_table(jobs: dict[int, dict]) -> list[dict]:
    """Per rule: jobs, finished jobs, first start and last end (minutes from the run's first
    start), summed job minutes; in order of first start."""
    if not jobs:
        return []
    t0 = min(j["start"] for j in jobs.values())
    by_rule: dict[str, list[dict]] = defaultdict(list)
    for job in jobs.values():
        by_rule[job["rule"]].append(job)
    rows = []
    for rule, members in by_rule.items():
        ended = [j for j in members if j["end"] is not None]
        rows.append(
            {
                "stage": rule,
                "jobs": len(members),
                "finished": len(ended),
                "from_min": min((j["start"] - t0).total_seconds() for j in members) / 60,
                "to_min": max(((j["end"] - t0).total_seconds() for j in ended), default=None),
                "job_min": sum((j["end"] - j["start"]).total_seconds() for j in ended) / 60,
            }
        )
        if rows[-1]["to_min"] is not None:
            rows[-1]["to_min"] /= 60
    return sorted(rows, key=lambda r: r["from_min"])


def engine_startups(results: Path) -> tuple[int, float]:
    """Engine loads the stages' counts report and their seconds: a job on a shared engine
    counts when it started the engine (`shared_engine.started_here`, its `load_s`), any
    other when it opened one (`startup_s` > 0)."""
    n, total = 0, 0.0
    for path in results.rglob("*counts.json"):
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        shared = counts.get("shared_engine")
        startup = shared["load_s"] if shared and shared["started_here"] else None
        if startup is None and not shared:
            startup = counts.get("startup_s")
        if isinstance(startup, (int, float)) and startup > 0:
            n += 1
            total += startup
    return n, total


def print_table(rows: list[dict]) -> None:
    print(f"{'stage':<16} {'jobs':>5} {'from min':>9} {'to min':>7} {'job min':>8}")
    for r in rows:
        done = "" if r["finished"] == r["jobs"] else f" ({r['finished']} done)"
        to = "-" if r["to_min"] is None else f"{r['to_min']:.1f}"
        print(
            f"{r['stage']:<16} {r['jobs']:>5} {r['from_min']:>9.1f} {to:>7} "
            f"{r['job_min']:>8.1f}{done}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/default-timed", help="results folder")
    parser.add_argument("--configfile", default=None, help="config over config/default.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--from-log", default=None, help="analyse this log; run nothing")
    parser.add_argument("targets", nargs="*", help="Snakemake targets (default: all)")
    args = parser.parse_args()
    results = ROOT / args.results
    if args.from_log:
        lines = Path(args.from_log).read_text().splitlines()
        print_table(stage_table(job_windows(lines)))
        return
    log_path = results.with_name(results.name + ".snakemake.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [str(ROOT / ".venv/bin/snakemake"), "--cores", str(args.cores)]
    if args.configfile:
        command += ["--configfile", args.configfile]
    command += ["--config", f"results={args.results}", *args.targets]
    print(" ".join(command), file=sys.stderr)
    started = time.time()
    with open(log_path, "w") as log:
        rc = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print_table(stage_table(job_windows(log_path.read_text().splitlines())))
    loads, startup_s = engine_startups(results)
    print(
        f"\nsnakemake rc {rc}; wall {wall:.0f} s ({wall / 60:.1f} min), "
        f"CPU {usage.ru_utime + usage.ru_stime:.0f} s; "
        f"engine start-ups {loads}, {startup_s:.0f} s in all; log {log_path}"
    )
    sys.exit(rc)


if __name__ == "__main__":
    main()
