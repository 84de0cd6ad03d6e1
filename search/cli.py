"""The argument parser every user-facing command line uses: a usage error is one line.

argparse's own `error()` prints the whole usage block (18 lines for `search.run` at 80 columns)
before the `prog: error: ...` line, so the reason scrolls among the flags. `Parser.error` keeps
argparse's message text and exit status 2, and prints only

    python -m search.run: error: argument --trials: invalid int value: 'x' (see --help)

`--help` is argparse's, unchanged.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_USAGE = 2


def one_line(prog: str, message: str) -> str:
    """`<prog>: error: <message> (see --help)`, on one line whatever `message` holds."""
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return f"{prog}: error: {text} (see --help)"


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose usage errors are one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, one_line(self.prog, message) + "\n")


__all__ = ["EXIT_USAGE", "Parser", "one_line"]
