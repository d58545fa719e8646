"""Atomic writes leave outputs with the modes the umask gives (synthllm.core.files)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
