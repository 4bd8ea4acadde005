"""The error every foreseeable problem raises, and the exit codes of the command-line tools.

A user never sees a traceback for a mistake we can foresee: the library raises an `RLSError`
(or a subclass) whose message names the problem and the fix, and each CLI entry point catches
it once and exits with a documented code. Subclasses also derive from the built-in exception
that describes them (ValueError for bad input, RuntimeError for an environment problem), so
existing `except ValueError` callers keep working.
"""
from __future__ import annotations

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


class InputError(RLSError, ValueError):
    """Bad user input (an image, a setting)."""


class DeviceError(RLSError, RuntimeError):
    """The requested device cannot be used."""


class SearchError(RLSError, RuntimeError):
    """A search broke down (a non-finite loss): its result must not be used."""
