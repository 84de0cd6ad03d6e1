"""Atomic file writes: a reader (or a crash) never sees half a file.

Every file the tools write for users (exported configs, reports, figures, trained weights,
checkpoints) goes through a temp file in the same folder, then `os.replace` over the target,
which is atomic on POSIX and Windows. Lives in `spaces` because `ArchConfig.to_file` needs it and
`spaces` depends on no other package of this project.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call `write(temp_path)`, then rename the temp file over `path`; on any error the temp
    file is removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # some writers create 0600 files
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    """`Path.write_text`, atomically (UTF-8)."""
    atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def make_folder(path: str | Path, flag: str, probe: bool = False) -> None:
    """Create the folder `path` (and its parents) for the command-line flag `flag`; ValueError
    with one line naming the flag when it cannot be one: a file, under a file, or not creatable.
    `probe` also writes and removes a temp file in it, so an unwritable folder is caught too."""
    import tempfile

    folder, name = Path(path), str(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {name!r} is a file; give a folder")
    for parent in folder.parents:  # the nearest existing one: under a file, mkdir says little
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot create {flag} {name!r}: {str(parent)!r} is a file")
            break
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if probe:
            with tempfile.TemporaryFile(dir=folder):
                pass
    except OSError as exc:
        verb = "write to" if existed else "create"
        raise ValueError(f"cannot {verb} {flag} {name!r}: {exc.strerror or exc}") from None


__all__ = ["atomic_write", "make_folder", "write_text"]
