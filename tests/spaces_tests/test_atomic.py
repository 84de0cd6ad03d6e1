"""Atomic writes: a failed write leaves the old file as it was and no temp file behind."""

from __future__ import annotations

import os

import pytest

from spaces import ArchConfig
from spaces.atomic import atomic_write, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "best.json"
    path.write_text("old\n")

    def half(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half a fi")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, half)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json"]


def test_write_text_replaces_and_keeps_the_umask_mode(tmp_path):
    path = tmp_path / "x.txt"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_config_to_file_is_atomic(tmp_path, monkeypatch):
    cfg = ArchConfig(vocab_size=16, seq_len=8, causal=True, depth=1, d_model=8, n_heads=1)
    path = tmp_path / "c.json"
    cfg.to_file(path)
    assert ArchConfig.from_file(path) == cfg

    def boom(self, indent=2):
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(ArchConfig, "to_json", boom)
    with pytest.raises(RuntimeError):
        cfg.replace(depth=2).to_file(path)
    assert ArchConfig.from_file(path) == cfg
