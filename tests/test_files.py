"""Atomic writes leave outputs with the modes the umask gives (synthllm.core.files)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from synthllm.core.files import StoredNpz

WRITE = """
import os, stat, sys
os.umask(int(sys.argv[1], 8))
from synthllm.core.files import atomic_dir, publish, write_json
write_json(sys.argv[2] + "/out.json", {"a": 1})
with atomic_dir(sys.argv[2]) as scratch:
    (scratch / "part.txt").write_text("x")
    publish({scratch / "part.txt": __import__("pathlib").Path(sys.argv[2]) / "part.txt"})
for name in ("out.json", "part.txt"):
    print(oct(stat.S_IMODE(os.stat(sys.argv[2] + "/" + name).st_mode)))
"""


@pytest.mark.parametrize("umask, mode", [("022", "0o644"), ("002", "0o664"), ("027", "0o640")])
def test_outputs_get_the_mode_the_umask_gives_a_new_file(tmp_path, umask, mode):
    proc = subprocess.run(
        [sys.executable, "-c", WRITE, umask, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.split() == [mode, mode]


def test_a_stored_npz_reads_slices_as_numpy_wrote_them(tmp_path):
    arrays = {
        "a": np.arange(1000, dtype=np.int64) * 3,
        "b": np.arange(77, dtype=np.uint32),
        "scalar": np.array(5),
        "empty": np.zeros(0, np.int32),
    }
    np.savez(tmp_path / "x.npz", **arrays)
    stored = StoredNpz(tmp_path / "x.npz")
    assert (stored.read("a", 10, 500) == arrays["a"][10:500]).all()
    assert (stored.read("b") == arrays["b"]).all() and stored.read("b").dtype == np.uint32
    assert int(stored.read("scalar")) == 5 and len(stored.read("empty")) == 0
    with pytest.raises(IndexError, match=r"items 70:90 of array b \(77\)"):
        stored.read("b", 70, 90)
    with pytest.raises(KeyError, match="no array 'c'"):
        stored.read("c")
    cut = tmp_path / "cut.npz"
    cut.write_bytes((tmp_path / "x.npz").read_bytes())
    cut_stored = StoredNpz(cut)
    with open(cut, "r+b") as f:  # a file cut after the zip was read
        f.truncate(cut_stored.members["b"][0] + 40)
    with pytest.raises(ValueError, match="array b is cut short"):
        cut_stored.read("b")
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    with pytest.raises(ValueError, match="z.npz: member a.npy is compressed"):
        StoredNpz(tmp_path / "z.npz")
