"""The run manifest: every stage writes `counts.json` beside its output; this reads them all."""

from __future__ import annotations

import json
from pathlib import Path

from synthllm.errors import SynthllmError


def collect(results: str | Path) -> list[dict]:
    """All counts files under a results folder (`counts.json`, `<shard>.counts.json`), in
    path order, with the path they describe."""
    rows = []
    for path in sorted(Path(results).rglob("*counts.json")):
        try:
            counts = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            rows.append({"path": str(path.parent), "error": f"unreadable counts: {exc}"})
            continue
        described = (
            path.parent
            if path.name == "counts.json"
            else path.with_name(path.name.removesuffix(".counts.json"))
        )
        rows.append({"path": str(described.relative_to(results)) or ".", **counts})
    return rows


def table(rows: list[dict]) -> str:
    """A fixed-width table: stage, folder, in, out, dropped by reason."""
    header = ("stage", "folder", "in", "out", "dropped")
    lines = [header]
    for r in rows:
        if "error" in r:
            lines.append(("?", r["path"], "", "", r["error"]))
            continue
        dropped = ", ".join(f"{k}={v}" for k, v in r.get("dropped", {}).items()) or "-"
        lines.append(
            (r.get("stage", "?"), r["path"], str(r.get("in", "")), str(r.get("out", "")), dropped)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    out = []
    for line in lines:
        out.append(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line[:4], widths))
            )
            + "  "
            + line[4]
        )
    return "\n".join(out)


def main(results: str) -> None:
    """`synthllm status [results]`: the counts table of a results folder."""
    rows = collect(results)
    if not rows:
        raise StatusError(f"no counts.json under {results}: nothing has run there yet")
    print(table(rows))


class StatusError(SynthllmError):
    """A results folder with nothing to report."""
