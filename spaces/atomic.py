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


__all__ = ["atomic_write", "write_text"]
