"""Argument checks shared by every layer of the package (imports nothing from it).

Strict types: a ``bool`` is not a number, a string is never parsed, and NumPy scalars count as the
Python type they stand for (``np.int64`` as an int, ``np.float32`` as a number, ``np.bool_`` as a
bool).
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

import numpy as np


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def check_int(value: Any, name: str, *, minimum: int) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) of at least ``minimum``.

    Raises:
        ValueError: anything else (a float, a string, a bool, or too small), naming ``name``.
    """
    if _is_bool(value) or not isinstance(value, numbers.Integral) or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a ``bool`` if it is one (``np.bool_`` too); ``1`` or ``"false"`` are refused.

    Raises:
        TypeError: ``value`` is not a bool, naming ``name``.
    """
    if not _is_bool(value):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_seed(value: Any, name: str = "seed") -> int | None:
    """``value`` as an ``int`` (NumPy integers too), or ``None``.

    Raises:
        TypeError: a bool, a float (even ``1.0``), a string or anything else, naming ``name``.
    """
    if value is None:
        return None
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer or None, got {value!r} ({type(value).__name__})"
        )
    return int(value)


def check_number(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """``value`` as a ``float`` if it is a finite real number within the given bounds.

    Args:
        value: the argument (``int``, ``float`` or a NumPy scalar; not a bool or a string).
        name: its name, for the messages.
        minimum, maximum: bounds (``None``: unbounded on that side).
        exclusive_minimum, exclusive_maximum: whether the bound itself is excluded.

    Raises:
        TypeError: not a real number (``None``, a string, a bool, a tensor, ...).
        ValueError: NaN, infinite, or outside the bounds; the message gives the allowed range.
    """
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    number = float(value)
    low_ok = minimum is None or (number > minimum if exclusive_minimum else number >= minimum)
    high_ok = maximum is None or (number < maximum if exclusive_maximum else number <= maximum)
    if not math.isfinite(number) or not (low_ok and high_ok):
        raise ValueError(
            f"{name} must be {_describe_range(minimum, maximum, exclusive_minimum, exclusive_maximum)}"
            f", got {value!r}"
        )
    return number


def _describe_range(
    minimum: float | None, maximum: float | None, open_low: bool, open_high: bool
) -> str:
    if minimum is None and maximum is None:
        return "a finite number"
    if maximum is None:
        return f"a finite number {'>' if open_low else '>='} {minimum:g}"
    if minimum is None:
        return f"a finite number {'<' if open_high else '<='} {maximum:g}"
    return (
        f"a number in {'(' if open_low else '['}{minimum:g}, {maximum:g}{')' if open_high else ']'}"
    )


#: The longest label name accepted, in characters: several times the longest name of any supported
#: label set (ImageNet's synonym lists stay under 150), and short enough that every message,
#: table and figure quoting names stays readable and fast (a 200,000-character name made the
#: report run for minutes).
MAX_LABEL_NAME_LENGTH = 512
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_label_name(name: Any, what: str) -> str:
    """``name`` if it is a non-empty ``str`` of valid Unicode of at most
    :data:`MAX_LABEL_NAME_LENGTH` characters, without control characters.

    Raises:
        TypeError: not a ``str``, naming ``what`` (e.g. ``"label name at position 3"``).
        ValueError: empty, too long, holding a lone surrogate (text that cannot be written as
            UTF-8, e.g. ``"\\ud800"``) or a control character (NUL, a tab, a newline, ...),
            naming ``what``.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} is empty")
    if len(name) > MAX_LABEL_NAME_LENGTH:
        raise ValueError(
            f"{what} is {len(name):,} characters long ({name[:40]!r}...); label names may have "
            f"at most {MAX_LABEL_NAME_LENGTH} characters"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{what} {ascii(name[:60])} holds a lone surrogate ({ascii(name[error.start])} at "
            f"position {error.start}): not valid Unicode text"
        ) from None
    control = _CONTROL.search(name)
    if control is not None:
        raise ValueError(
            f"{what} {ascii(name[:60])} holds a control character ({ascii(control.group())} at "
            f"position {control.start()})"
        )
    return name
