"""Argument types shared by every sub-command's parser (the run commands and the energy ones): argparse
names the option and exits 2 when a value does not hold. A module of its own so `energy_parser` can take
them without importing the rest of the command line."""

from __future__ import annotations

import argparse


def input_shape_arg(text: str) -> tuple[int, int, int]:
    """argparse type for C,H,W (shared with the energy commands)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected C,H,W as three positive integers, e.g. 1,28,28; got {text!r}"
        )
    return values  # type: ignore[return-value]


def _bounded(kind: type, low: float, strict: bool, what: str):
    """An argparse type: a number of ``kind`` at least (or, ``strict``, above) ``low``; argparse names the
    option and exits 2 when it does not hold."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value != value or (value <= low if strict else value < low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse shows the type's name in some messages
    return parse


positive_int = _bounded(int, 1, False, "a positive integer (1 or more)")
non_negative_int = _bounded(int, 0, False, "a non-negative integer (0 or more)")
positive_float = _bounded(float, 0, True, "a positive number")
class_count = _bounded(int, 2, False, "a class count of 2 or more")
