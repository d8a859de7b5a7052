"""Argument types of the command line: numbers checked as they are parsed, with argparse's own error message."""

import argparse
import math


def _parsed(text, convert, accept, expected):
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text):
    """An integer >= 1."""
    return _parsed(text, int, lambda value: value >= 1, "a positive integer")


def non_negative_int(text):
    """An integer >= 0."""
    return _parsed(text, int, lambda value: value >= 0, "an integer >= 0")


def positive_float(text):
    """A finite number > 0."""
    return _parsed(text, float, lambda value: math.isfinite(value) and value > 0, "a positive number")


def number(text):
    """Any number (checks of range belong to the function the option feeds)."""
    return _parsed(text, float, lambda value: True, "a number")
