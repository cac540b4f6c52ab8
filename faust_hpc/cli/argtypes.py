"""argparse ``type=`` functions that refuse absurd numbers on the command line.

argparse turns the :class:`argparse.ArgumentTypeError` into its usual usage
line plus one error line and exit status 2, before the command does anything.
A ``nan`` grace would never interrupt, a negative one would interrupt at once,
and a zero progress interval would print without pause: all are refused.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable


def seconds(*, minimum: float = 0.0, strict: bool = False) -> Callable[[str], float]:
    """A finite number of seconds, >= ``minimum`` (> when ``strict``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
        below = value <= minimum if strict else value < minimum
        if not math.isfinite(value) or below:
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise argparse.ArgumentTypeError(f"expected a finite number of seconds {bound}, got {text!r}")
        return value
    return parse


def count(*, minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """An integer in ``minimum``..``maximum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {text!r}")
        return value
    return parse
