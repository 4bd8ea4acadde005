"""The error every foreseeable problem raises, and the exit codes of the command-line tools.

A user never sees a traceback for a mistake we can foresee: the library raises an `RLSError`
(or a subclass) whose message names the problem and the fix, and `run_command`, which every
CLI entry point goes through, catches it and exits with a documented code. Subclasses also
derive from the built-in exception that describes them (ValueError for bad input,
RuntimeError for an environment problem), so existing `except ValueError` callers keep working.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

#: exit codes of `rls ...` (README, "Exit codes")
EXIT_OK = 0             # everything asked for was done
EXIT_SOME_FAILED = 1    # some inputs failed (the summary says which); the others are done
EXIT_NOTHING_RAN = 2    # nothing could run: bad usage, unusable model or data, no device
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it); finished outputs are kept


class RLSError(Exception):
    """A foreseeable problem: `problem` says what is wrong, `fix` what to do about it."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


def run_command(command: str, func: Callable[[Any], Optional[int]], args: Any) -> int:
    """Run one CLI command and return its exit code: the single place where a foreseeable
    problem (an RLSError) becomes a message and EXIT_NOTHING_RAN, and Ctrl-C becomes
    EXIT_INTERRUPTED. Every entry point (`rls X`, `python -m rls_core.X`) goes through it."""
    import sys

    try:
        return int(func(args) or 0)
    except RLSError as e:  # its message says what to do: no traceback
        print(f"rls {command}: error: {e}", file=sys.stderr)
        return EXIT_NOTHING_RAN
    except KeyboardInterrupt:
        print(f"rls {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class InputError(RLSError, ValueError):
    """Bad user input (an image, a setting)."""


class DeviceError(RLSError, RuntimeError):
    """The requested device cannot be used."""


class SearchError(RLSError, RuntimeError):
    """A search broke down (a non-finite loss): its result must not be used."""
