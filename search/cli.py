"""What every command line shares: its argument parser, whose usage error is one line, and
`run_main`, its `__main__`, which ends a closed pipe (`... | head`) without a traceback.

argparse's own `error()` prints the whole usage block (18 lines for `search.run` at 80 columns)
before the `prog: error: ...` line, so the reason scrolls among the flags. `Parser.error` keeps
argparse's message text and exit status 2, and prints only

    python -m search.run: error: argument --trials: invalid int value: 'x' (see --help)

`--help` is argparse's, unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command its pipe ended


def one_line(prog: str, message: str) -> str:
    """`<prog>: error: <message> (see --help)`, on one line whatever `message` holds."""
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return f"{prog}: error: {text} (see --help)"


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose usage errors are one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, one_line(self.prog, message) + "\n")


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """A command's `__main__`: `sys.exit(main())`, except that a reader that stopped reading
    (`python -m search.fidelity ... | head`) ends the command quietly with exit status 141, as
    the shell reports a command that SIGPIPE ended, instead of in a BrokenPipeError traceback.

    This is the recipe of Python's `signal` documentation ("Note on SIGPIPE"): stdout is
    pointed at os.devnull so that the interpreter's own flush at exit cannot fail again."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    sys.exit(code)


__all__ = ["EXIT_BROKEN_PIPE", "EXIT_USAGE", "Parser", "one_line", "run_main"]
