"""Fill `resources/demo_corpus/`, the corpus of the embedded default config.

From a local copy of the project's shared data (`../shared/data/corpus`) when it sits beside
the checkout: no network needed. Otherwise a small FineWeb-Edu sample is fetched from the
Hugging Face datasets server for users who have internet. With neither, the error says
which config key to set instead.
"""

from __future__ import annotations

import json
import logging
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from synthllm.core.files import atomic_path
from synthllm.errors import SynthllmError

log = logging.getLogger(__name__)

FINEWEB_EDU_ROWS_URL = "https://datasets-server.huggingface.co/rows"
FINEWEB_EDU_DIR = "fineweb_edu_sample"


class DemoCorpusError(SynthllmError):
    pass


def copy_shared(shared: Path, dest: Path) -> list[Path]:
    """Copy every file under `shared` into `dest` (same layout); existing identical files stay."""
    copied = []
    for src in sorted(p for p in shared.rglob("*") if p.is_file()):
        target = dest / src.relative_to(shared)
        if target.exists() and target.stat().st_size == src.stat().st_size:
            continue
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        copied.append(target)
    return copied


def fetch_fineweb_edu(dest: Path, n_docs: int = 500, page: int = 100, timeout: float = 30) -> Path:
    """Fetch the first `n_docs` rows of FineWeb-Edu sample-10BT as jsonl (FineWeb-Edu fields)."""
    target = dest / FINEWEB_EDU_DIR / "sample-10BT.jsonl"
    if target.exists() and target.stat().st_size > 0:
        return target
    rows = []
    for offset in range(0, n_docs, page):
        query = urllib.parse.urlencode(
            {
                "dataset": "HuggingFaceFW/fineweb-edu",
                "config": "sample-10BT",
                "split": "train",
                "offset": offset,
                "length": min(page, n_docs - offset),
            }
        )
        with urllib.request.urlopen(f"{FINEWEB_EDU_ROWS_URL}?{query}", timeout=timeout) as resp:
            payload = json.load(resp)
        rows.extend(item["row"] for item in payload["rows"])
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return target


def fill(dest: str | Path, shared: str | Path | None) -> str:
    dest = Path(dest)
    if shared is not None and Path(shared).is_dir():
        copied = copy_shared(Path(shared), dest)
        return f"demo corpus: {len(copied)} file(s) copied from {shared} into {dest}"
    try:
        target = fetch_fineweb_edu(dest)
    except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        raise DemoCorpusError(
            f"no shared data at {shared} and FineWeb-Edu could not be fetched ({exc}). "
            "Point config key corpus.sources (glob, format, text) at your own corpus files "
            "instead of resources/demo_corpus."
        ) from exc
    return f"demo corpus: FineWeb-Edu sample written to {target}"


def main(dest: str, shared: str) -> None:
    """`synthllm demo-corpus`: fill the embedded default's corpus folder."""
    print(fill(dest, shared))
