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


class DivergenceError(RuntimeError):
    """A tclean that ran away and was stopped (:mod:`faust_hpc.imaging.guard`).

    Not bad input and not a crash: the data of this unit make the clean
    diverge (typically a channel far noisier than the rest). A batch driver
    records the unit as *diverged* with ``reason`` and goes on with the rest;
    retrying the same unit gives the same result.

    Attributes: ``stage`` (``"nomask"``, ``"clean"``, ...), ``reason`` (one
    line: ``major-cycle cap reached (N major cycles done, cap C from dirty
    peak P Jy / threshold T Jy)`` and/or the signs seen -- ``model flux
    strongly negative (below F Jy): channel K -1.2 Jy, ...`` and ``peak
    residual grew: channel K a -> b Jy, ...`` -- then ``diverging channels:
    K, ...``, indices of the clean's own channel grid, worst first),
    ``nmajordone`` and ``cap`` (major cycles done / allowed), ``channels``
    (those indices).
    """

    def __init__(self, stage: str, reason: str, *, nmajordone: int = 0, cap: int = 0,
                 channels: tuple[int, ...] = ()) -> None:
        super().__init__(f"tclean {stage} diverged: {reason}")
        self.stage = stage
        self.reason = reason
        self.nmajordone = nmajordone
        self.cap = cap
        self.channels = channels
