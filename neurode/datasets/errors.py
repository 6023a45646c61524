"""Errors of the data layer: stores that are missing, unreadable or off-schema.

All derive from :class:`neurode.framework.errors.NeurodeError`, so the command
line prints them as one message instead of a traceback. Each names the path
(when there is one), what is wrong, and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence

from neurode.framework.errors import NeurodeError


class DataError(NeurodeError):
    """A problem with a dataset, a store, or a request about one."""


class StoreNotFoundError(DataError, FileNotFoundError):
    """The path given as a store does not exist."""


class StoreExistsError(DataError, FileExistsError):
    """Refusing to write over an existing store without ``overwrite``."""


class StoreWriteError(DataError, OSError):
    """A store cannot be written where asked (a read-only directory, a parent that is a file)."""


class UnreadableStoreError(DataError, OSError):
    """The store exists but could not be read by the chosen loader."""


class NoLoaderError(DataError):
    """No registered loader recognises a path.

    The advice differs by where the user is: ``loader=<name>`` in Python,
    ``--loader NAME`` on the command line, which prints :attr:`cli_message`.
    """

    def __init__(self, message: str, *, cli_message: str | None = None) -> None:
        super().__init__(message)
        self.cli_message = cli_message or message


class SchemaError(DataError, ValueError):
    """A dataset that does not match the canonical trajectory schema.

    ``violations`` lists every problem found, not only the first: fixing a
    store one error at a time is a miserable loop.
    """

    def __init__(self, violations: Sequence[str], *, source: str | None = None, hint: str | None = None) -> None:
        self.violations = list(violations)
        self.source = source
        self.hint = hint
        where = f"{source}: " if source else ""
        count = len(self.violations)
        lines = "\n".join(f"  - {v}" for v in self.violations)
        message = (
            f"{where}dataset does not match the neurode trajectory schema "
            f"({count} problem{'s' * (count != 1)}):\n{lines}"
        )
        if hint:
            message += f"\n{hint}"
        super().__init__(message)


class UnknownVariableError(DataError, KeyError):
    """Variables were asked for by name that the dataset does not have."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class UnknownSystemError(DataError, KeyError):
    """A simulator name that is not in the table of physical systems."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class SimulationConfigError(DataError, ValueError):
    """Simulation options that cannot be honoured (bad ranges, counts, modes)."""
