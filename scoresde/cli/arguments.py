"""argparse types of the commands' flags and the --dtype names."""
from __future__ import annotations

import argparse
import math

import torch


def _int_at_least(minimum: int, wanted: str):
    """An argparse type: an integer >= ``minimum``, described as ``wanted`` in errors."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")
positive_int.__doc__ = "argparse type: an integer >= 1."
nonnegative_int = _int_at_least(0, "an integer >= 0")
nonnegative_int.__doc__ = "argparse type: an integer >= 0."


def integer(text: str) -> int:
    """argparse type: any integer (the library checks the range and names the option)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")


def int_list(text: str) -> tuple:
    """argparse type: comma-separated integers, e.g. "999,899,799" (the library checks them)."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def real(text: str) -> float:
    """argparse type: a float ("inf" accepted; the library checks the range)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")


def positive_real(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = real(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def nonnegative_real(text: str) -> float:
    """argparse type: a finite float >= 0."""
    value = real(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def unit_interval(text: str) -> float:
    """argparse type: a float in [0, 1)."""
    value = real(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


DTYPES = {"float32": torch.float32, "float64": torch.float64}
