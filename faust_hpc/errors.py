"""Exception types shared by every layer.

A :class:`UserInputError` is a mistake the user can fix (a typo in a label, a
missing directory, a malformed run file). The CLI prints its message as one
line and exits with status 2 before any work starts; everything else is a bug
or a failure of the machine and keeps its traceback.
"""
from __future__ import annotations


class UserInputError(Exception):
    """Bad input: the message says what is wrong and what would be right."""

    exit_status = 2


class CatalogError(UserInputError, KeyError):
    """Unknown FAUST field name or SPW label."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunFileError(UserInputError):
    """A run file that cannot be accepted (unknown key, wrong type, bad value)."""


class DataError(UserInputError):
    """Input data that cannot be imaged (a measurement set that is missing, not
    an MS, corrupt, or lacks the field or an SPW): found before any work."""


class PrerequisiteError(UserInputError):
    """A stage was called before the stage that produces its inputs."""
