"""Argument types and the help format shared by every `soundmind` sub-command.

Each type raises `argparse.ArgumentTypeError` with a message of its own, so argparse says
"argument --limit: must be a whole number >= 1, got 'x'" (not "invalid _positive value").
"""

from __future__ import annotations

import argparse
import math


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default (unless it says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _number(kind: type, minimum: float, inclusive: bool):
    relation = ">=" if inclusive else ">"
    noun = "a whole number" if kind is int else "a number"

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if (
            value is None
            or (kind is float and not math.isfinite(value))
            or not (value >= minimum if inclusive else value > minimum)
        ):
            raise argparse.ArgumentTypeError(f"must be {noun} {relation} {minimum:g}, got {text!r}")
        return value

    convert.__name__ = f"{noun} {relation} {minimum:g}"
    return convert


positive_int = _number(int, 1, inclusive=True)
non_negative_int = _number(int, 0, inclusive=True)
positive_float = _number(float, 0, inclusive=False)
non_negative_float = _number(float, 0, inclusive=True)


def port(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text!r}")
    return value
