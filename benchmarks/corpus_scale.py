"""Corpus stage at scale: throughput and peak memory of each of its jobs, against the corpus size.

Makes its own input (web-like documents of random words, a few hundred bytes to a few KB,
with 1 % exact duplicates, some of them across files, and 0.5 % empty texts, in parquet
files of `--docs-per-file` documents), then runs the stage's jobs as rules/01_corpus.smk
does, each in a child process of its own (`synthllm corpus_part`, `corpus_shard`,
`corpus`), one at a time, and prints each job's documents, wall and CPU seconds,
documents per CPU second and peak RSS (the child's getrusage ru_maxrss). Each size in
`--docs` is one run: the same files per job and documents per shard (so the shard count
grows with the corpus), which is how a scatter-gather is sized; a scatter job's memory
is one batch, a gather job's the ids of its shard, so neither should grow with the corpus.

    .venv/bin/python benchmarks/corpus_scale.py                         # 2.5 M and 10 M docs
    .venv/bin/python benchmarks/corpus_scale.py --docs 200000 --docs-per-file 50000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synthllm.stages.corpus_parts import part_groups

# this process stays small: a child's ru_maxrss starts at the RSS of the process it was
# forked from (Linux counts the forked copy before the exec), so the input is made in a
# child of its own and numpy and pyarrow are imported there only
VOCAB = (
    "the of and a to in is that for it as was with be by on not he this are or "
    "his from at which but have an they you were her she there been one all we "
    "their has would when if can more no so what up out about into than them "
    "number equation triangle prime integer derivative function area circle "
    "probability matrix vector theorem proof angle sum product ratio"
).split()


def word_pool(rng, n_words: int) -> str:
    return " ".join(rng.choice(VOCAB, n_words))


def make_texts(rng, pool: str, n: int) -> list[str]:
    """Slices of a long random text: lengths log-normal around 600 bytes, 200 B to 6 KB."""
    import numpy as np

    lengths = np.clip(rng.lognormal(np.log(600), 0.6, n), 200, 6000).astype(np.int64)
    starts = rng.integers(0, len(pool) - 6001, n)
    return [pool[s : s + n_] for s, n_ in zip(starts.tolist(), lengths.tolist())]


def make_input(folder: Path, n_docs: int, per_file: int, seed: int) -> int:
    """Parquet files of FineWeb-Edu's layout (text, id, url); their size in bytes."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    pool = word_pool(rng, 2_000_000)
    shared = make_texts(rng, pool, 1000)  # boilerplate that recurs across files
    written = f = 0
    while written < n_docs:
        n = min(per_file, n_docs - written)
        texts = make_texts(rng, pool, n)
        for i in rng.choice(n, size=n // 200, replace=False):  # duplicates within the file
            texts[i] = texts[(i + 1) % n]
        for i in rng.choice(n, size=n // 200, replace=False):  # and across files
            texts[i] = shared[int(rng.integers(0, len(shared)))]
        for i in rng.choice(n, size=n // 200, replace=False):  # empty documents
            texts[i] = "   "
        ids = [f"<urn:uuid:{written + i}>" for i in range(n)]
        urls = [f"https://example.org/{written + i}" for i in range(n)]
        table = pa.table({"text": texts, "id": ids, "url": urls})
        pq.write_table(
            table, folder / f"{f:05d}.parquet", compression="zstd", row_group_size=20_000
        )
        written += n
        f += 1
    return sum(p.stat().st_size for p in folder.iterdir())


def run_job(command: str, parts: dict) -> dict:
    """One stage job in a child process; its wall and CPU seconds and peak RSS."""
    cmd = [sys.executable, "-m", "synthllm", command]
    cmd += [f"--{name}={json.dumps(value)}" for name, value in parts.items()]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{command} failed:\n{stderr.decode()[-2000:]}")
    return {
        "wall": time.time() - t0,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
    }


def stage(tmp: Path, args, n_shards: int) -> tuple[list, dict]:
    """Every job of the stage on the files under tmp/in, as rules/01_corpus.smk runs them."""
    entry = {"name": "fw", "glob": str(tmp / "in" / "*.parquet"), "id": "id", "url": "url"}
    groups = part_groups([entry], args.files_per_job)
    work, out = tmp / "work", tmp / "out"
    ids = [g["id"] for g in groups]
    policy = {"n_shards": n_shards, "on_bad_record": "fail"}
    jobs = []
    for g in groups:
        counts = work / f"{g['id']}.json"
        usage = run_job(
            "corpus_part",
            {
                "inputs": {"files": g["files"]},
                "outputs": {"part": str(work / f"{g['id']}.arrow"), "counts": str(counts)},
                "settings": {
                    "part": g["id"],
                    "source_index": 0,
                    "first_file": g["first_file"],
                    "source": entry,
                    "limited": False,
                    **policy,
                },
                "execution": {"batch_size": args.batch_size, "threads": 1},
            },
        )
        jobs.append({"job": "corpus_part", "docs": json.loads(counts.read_text())["in"], **usage})
    parts = {
        "parts": [str(work / f"{i}.arrow") for i in ids],
        "part_counts": [str(work / f"{i}.json") for i in ids],
    }
    shards = [f"{i:05d}-of-{n_shards:05d}" for i in range(n_shards)]
    for shard in shards:
        counts = work / f"shard-{shard}.json"
        usage = run_job(
            "corpus_shard",
            {
                "inputs": parts,
                "outputs": {"shard": str(work / f"shard-{shard}.parquet"), "counts": str(counts)},
                "settings": {"shard": shard, "n_shards": n_shards, "parts": ids},
                "execution": {"batch_size": args.batch_size, "threads": 1},
            },
        )
        jobs.append(
            {"job": "corpus_shard", "docs": json.loads(counts.read_text())["rows"], **usage}
        )
    usage = run_job(
        "corpus",
        {
            "inputs": {
                "shards": [str(work / f"shard-{s}.parquet") for s in shards],
                "shard_counts": [str(work / f"shard-{s}.json") for s in shards],
                "part_counts": parts["part_counts"],
            },
            "outputs": {
                "shards": [str(out / f"shard-{s}.parquet") for s in shards],
                "counts": str(out / "counts.json"),
            },
            "settings": {
                "sources": ["fw"],
                "parts": ids,
                **policy,
                "max_skipped_share": 1.0,
            },
            "execution": {"min_docs_per_source": 1, "threads": 1},
        },
    )
    counts = json.loads((out / "counts.json").read_text())
    jobs.append({"job": "corpus", "docs": counts["in"], **usage})
    return jobs, counts


def report(n_docs: int, jobs: list, counts: dict, made_s: float, size: int) -> None:
    print(
        f"\n== {n_docs:,} docs: {counts['in']:,} in, {counts['out']:,} out, dropped "
        f"{counts['dropped']}; input {size / 2**20:,.0f} MiB parquet, made in {made_s:.0f} s"
    )
    print(f"{'job':<14}{'docs':>11}{'wall s':>9}{'CPU s':>8}{'docs/CPU s':>12}{'peak RSS MiB':>14}")
    for job in jobs:
        rate = job["docs"] / job["cpu"] if job["cpu"] else 0
        print(
            f"{job['job']:<14}{job['docs']:>11,}{job['wall']:>9.1f}{job['cpu']:>8.1f}"
            f"{rate:>12,.0f}{job['rss_mib']:>14,.0f}"
        )
    for kind in ("corpus_part", "corpus_shard", "corpus"):
        mine = [j for j in jobs if j["job"] == kind]
        rates = [j["docs"] / j["cpu"] for j in mine if j["cpu"]]
        print(
            f"{kind:<14} {len(mine):>3} jobs: median {statistics.median(rates):,.0f} docs/CPU s, "
            f"peak RSS max {max(j['rss_mib'] for j in mine):,.0f} MiB, "
            f"CPU {sum(j['cpu'] for j in mine):,.0f} s in all"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, nargs="+", default=[2_500_000, 10_000_000])
    ap.add_argument("--docs-per-file", type=int, default=250_000)
    ap.add_argument("--files-per-job", type=int, default=2)
    ap.add_argument("--docs-per-shard", type=int, default=625_000)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="where the data goes (default: the system's)")
    ap.add_argument("--make-input", metavar="DIR", help=argparse.SUPPRESS)  # the child's job
    args = ap.parse_args()
    if args.make_input:
        size = make_input(Path(args.make_input), args.docs[0], args.docs_per_file, args.seed)
        print(size)
        return
    for n_docs in args.docs:
        with tempfile.TemporaryDirectory(prefix="corpus-scale-", dir=args.tmp) as tmp:
            tmp = Path(tmp)
            (tmp / "in").mkdir()
            t0 = time.time()
            maker = [sys.executable, __file__, "--make-input", str(tmp / "in")]
            maker += ["--docs", str(n_docs), "--docs-per-file", str(args.docs_per_file)]
            maker += ["--seed", str(args.seed)]
            size = int(subprocess.run(maker, check=True, capture_output=True).stdout)
            made = time.time() - t0
            n_shards = max(1, round(n_docs / args.docs_per_shard))
            jobs, counts = stage(tmp, args, n_shards)
        report(n_docs, jobs, counts, made, size)


if __name__ == "__main__":
    main()
