"""Atomic writes, the per-stage counts file, per-step time and memory of a long job, and
slices of a stored .npz read from disk.

Every output is written to a temporary name in the destination folder and renamed into
place only when complete, so a killed or failed job never leaves a truncated file behind
under a final name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import struct
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

COUNTS_SCHEMA_VERSION = 1


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# the process's umask, read once: tempfile makes its files 0600 and folders 0700 whatever
# the umask says, and a rename keeps them, so outputs shared with a group would not be
# readable by it; what atomic_path and readable() give back is what open() would have made
UMASK = _umask()


def readable(path: str | os.PathLike) -> None:
    """Give a file or folder made by tempfile the mode the umask gives a new one."""
    mode = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, mode & ~UMASK)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    readable(tmp_path)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_figure(fig, *paths: str | os.PathLike, dpi: int = 150) -> None:
    """Write a matplotlib figure to each path atomically, in the format its suffix names,
    cropped to its content."""
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], dpi=dpi, bbox_inches="tight")


@contextlib.contextmanager
def atomic_dir(final_parent: str | os.PathLike) -> Iterator[Path]:
    """A scratch folder inside `final_parent`, removed whatever happens.

    Stages that write several files write them here first and move each into place
    (`publish`) only after all of them are complete.
    """
    parent = Path(final_parent)
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=parent))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def publish(files: dict[Path, Path]) -> None:
    """Rename finished scratch files onto their final names (same filesystem, so atomic each)."""
    for src, dst in files.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_counts(
    path: str | os.PathLike,
    stage: str,
    records_in: int,
    records_out: int,
    dropped: dict[str, int],
    **extra: Any,
) -> dict:
    """Write a stage's counts: records in, out, and dropped by reason.

    The invariant `in == out + sum(dropped)` is checked here so that no stage can lose
    records silently.
    """
    dropped = {k: int(v) for k, v in sorted(dropped.items()) if v}
    if records_in != records_out + sum(dropped.values()):
        raise AssertionError(
            f"{stage}: counts do not add up: in={records_in} out={records_out} dropped={dropped}"
        )
    counts = {
        "schema": COUNTS_SCHEMA_VERSION,
        "stage": stage,
        "in": int(records_in),
        "out": int(records_out),
        "dropped": dropped,
        **extra,
    }
    write_json(path, counts)
    return counts


def write_parquet(rows: list[dict], schema, path: str | os.PathLike) -> None:
    """Write rows as one parquet file, atomically."""
    import pyarrow as pa

    write_parquet_table(pa.Table.from_pylist(rows, schema=schema), path)


def write_parquet_table(table, path: str | os.PathLike) -> None:
    """Write an Arrow table as one parquet file, atomically."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


class StepLog:
    """Wall time and peak memory so far after each step of a job, logged and kept (for the
    stage's report or counts file: where a paper-scale run spends its time and memory)."""

    def __init__(self, logger: str = "synthllm"):
        self.log = logging.getLogger(logger)
        self.last = time.perf_counter()
        self.steps: dict[str, dict] = {}

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        self.steps[step] = {"seconds": round(now - self.last, 1), "peak_gib_so_far": round(peak, 2)}
        self.log.info("%-32s %7.1f s   peak so far %.2f GiB", step, now - self.last, peak)
        self.last = now

    def seconds(self) -> float:
        return round(sum(s["seconds"] for s in self.steps.values()), 1)


class StoredNpz:
    """The arrays of an uncompressed .npz (as `np.savez` writes it), read by slice straight
    from the file: a slice costs its own bytes only, so a job can stream arrays larger than
    its memory (memory-mapping them instead would count every page touched in the job's
    resident memory until the map is closed)."""

    def __init__(self, path: str | os.PathLike):
        import numpy as np

        self.path = Path(path)
        self.members: dict[str, tuple[int, Any, tuple[int, ...]]] = {}
        with zipfile.ZipFile(self.path) as z, open(self.path, "rb") as f:
            for info in z.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    raise ValueError(
                        f"{self.path}: member {info.filename} is compressed; only np.savez's "
                        "uncompressed members can be read by slice"
                    )
                f.seek(info.header_offset + 26)  # the local header's name and extra lengths
                name_len, extra_len = struct.unpack("<HH", f.read(4))
                f.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(f)
                if fortran and len(shape) > 1:
                    raise ValueError(f"{self.path}: member {info.filename} is in Fortran order")
                self.members[info.filename.removesuffix(".npy")] = (f.tell(), dtype, shape)

    def read(self, name: str, start: int = 0, stop: int | None = None):
        """Items [start, stop) of a 1-d member (the whole member by default; a 0-d member is
        read whole)."""
        import numpy as np

        if name not in self.members:
            raise KeyError(f"{self.path}: no array {name!r} (it holds {sorted(self.members)})")
        offset, dtype, shape = self.members[name]
        if not shape:
            return np.fromfile(self.path, dtype, 1, offset=offset).reshape(())
        stop = shape[0] if stop is None else stop
        if not 0 <= start <= stop <= shape[0]:
            raise IndexError(f"{self.path}: items {start}:{stop} of array {name} ({shape[0]})")
        out = np.fromfile(self.path, dtype, stop - start, offset=offset + start * dtype.itemsize)
        if len(out) != stop - start:
            raise ValueError(f"{self.path}: array {name} is cut short (read {len(out)} items)")
        return out
