"""How the corpus stage's input files are split into jobs (synthllm.stages.corpus): the
files of each source, sorted by path, in groups of `corpus.files_per_job`.

Only the standard library: the workflow's own process plans the groups (rules/common.smk).
"""

from __future__ import annotations

import glob as globlib
from pathlib import Path


def source_files(pattern: str) -> list[str]:
    """The files a source's glob matches (recursive ** allowed), sorted by path."""
    return sorted(p for p in globlib.glob(pattern, recursive=True) if Path(p).is_file())


def part_id(name: str, group: int, n_groups: int) -> str:
    return f"{name}-{group:05d}-of-{n_groups:05d}"


# the `{part}` wildcard: a source name (config schema pattern), then the group
PART_PATTERN = r"[A-Za-z0-9_.-]+-\d{5}-of-\d{5}"


def part_groups(sources: list[dict], files_per_job: int) -> list[dict]:
    """The scatter jobs of config key corpus.sources, in the corpus's order (sources in
    config order, files sorted by path): one per `files_per_job` files of a source, as
    {"id", "source_index", "first_file", "files"}. A source that matches no file gets one
    job without files when it is not optional (the job fails naming its glob); when no
    source matches any file, the first source does (the job fails saying so)."""
    if files_per_job < 1:
        raise ValueError(f"corpus.files_per_job: must be at least 1, got {files_per_job}")
    names = [entry["name"] for entry in sources]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"corpus.sources: more than one source is named {', '.join(twice)}")
    groups = []
    for index, entry in enumerate(sources):
        files = source_files(entry["glob"])
        if not files:
            if not entry.get("optional", False):
                groups.append(_group(entry["name"], 0, 0, index, 0, []))
            continue
        n = -(-len(files) // files_per_job)
        for g in range(n):
            first = g * files_per_job
            chunk = files[first : first + files_per_job]
            groups.append(_group(entry["name"], g, n, index, first, chunk))
    if not groups:
        groups.append(_group(sources[0]["name"], 0, 0, 0, 0, []))
    return groups


def _group(name, group, n_groups, index, first, files) -> dict:
    return {
        "id": part_id(name, group, n_groups),
        "source_index": index,
        "first_file": first,
        "files": files,
    }
