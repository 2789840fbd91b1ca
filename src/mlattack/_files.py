"""Reading the files a user names: regular files only, inside a root when one is given.

Every file mlattack reads on a user's behalf (dataset lists, label CSVs, annotations, images, graph
JSON) is opened here. A FIFO, a device or a socket is refused (reading one can block for ever); a
file reached through a symlink is followed, but with ``inside`` its real path must lie under the
real path of that folder (a dataset root), so a link planted in a dataset cannot make mlattack read
files elsewhere. Text is UTF-8 (a leading byte-order mark is accepted); other encodings are refused
with the file and line rather than guessed. Imports nothing from the package.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "NotRegularFileError",
    "OutsideRootError",
    "csv_rows",
    "open_regular",
    "read_json_file",
    "read_text",
]


class NotRegularFileError(ValueError):
    """A FIFO, device, socket or directory where a file is to be read."""


class OutsideRootError(ValueError):
    """A file whose real path (after symlinks) leaves the folder it must lie in."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(
    path: str | os.PathLike[str], what: str, *, inside: Path | None = None
) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file (after symlinks).

    ``what`` names the file in messages (e.g. ``"VOC image list"``). With ``inside``, the file's
    real path must lie under the real path of the folder ``inside``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NotRegularFileError: ``path`` is a FIFO, device, socket or directory.
        OutsideRootError: ``path`` leaves ``inside``.
        ValueError: ``path`` cannot be opened (no permission, ...).

    Every message names the file.
    """
    real = os.path.realpath(path)
    if inside is not None:
        root = os.path.realpath(inside)
        if os.path.commonpath([real, root]) != root:
            raise OutsideRootError(
                f"{what} {os.fspath(path)!r} leads outside the dataset root {os.fspath(inside)!r} "
                f"(its real path is {real!r}): refused"
            )
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer before it is refused
        descriptor = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {os.fspath(path)}") from None
    except OSError as error:
        raise ValueError(f"{what} {os.fspath(path)!r} cannot be read: {error.strerror}") from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise NotRegularFileError(
            f"{what} {os.fspath(path)!r} cannot be read: it is {_kind(mode)}, not a regular file"
        )
    return os.fdopen(descriptor, "rb")


def _not_utf8(path: str | os.PathLike[str], what: str, line: int, column: int, byte: int) -> str:
    return (
        f"{what} {os.fspath(path)!r}, line {line}: not UTF-8 text (byte 0x{byte:02x} at column "
        f"{column}); save the file as UTF-8"
    )


def read_text(path: str | os.PathLike[str], what: str, *, inside: Path | None = None) -> str:
    """The UTF-8 text of a regular file (see :func:`open_regular`); a leading BOM is dropped.

    Raises:
        FileNotFoundError, ValueError: as :func:`open_regular`; ``ValueError`` also for text that
            is not UTF-8 (naming the line and the byte).
    """
    with open_regular(path, what, inside=inside) as handle:
        data = handle.read().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        raise ValueError(_not_utf8(path, what, line, column, data[error.start])) from None


def _lines(handle: BinaryIO, path: str | os.PathLike[str], what: str) -> Iterator[str]:
    """Decoded lines with their endings; ``\r``, ``\n`` and ``\r\n`` each end a line (as
    ``newline=""`` reads them for the CSV reader)."""
    number = 0
    for chunk in handle:
        for raw in chunk.splitlines(keepends=True):
            number += 1
            line = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    _not_utf8(path, what, number, error.start + 1, line[error.start])
                ) from None


def csv_rows(
    path: str | os.PathLike[str], what: str, *, inside: Path | None = None
) -> Iterator[tuple[int, list[str]]]:
    """``(line number, row)`` of a UTF-8 CSV file (BOM accepted), read as it is iterated.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_text`; ``ValueError`` also for a malformed
            row, a NUL byte or a field over the CSV reader's limit (131,072 characters), naming
            the file and line.
    """
    with open_regular(path, what, inside=inside) as handle:
        reader = csv.reader(_lines(handle, path, what))
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                problem = (
                    f"a field holds more than {csv.field_size_limit():,} characters (the CSV "
                    "reader's limit)"
                    if "field larger" in str(error)
                    else str(error)
                )
                raise ValueError(
                    f"{what} {os.fspath(path)!r}, line {reader.line_num}: {problem}"
                ) from None
            yield reader.line_num, row


def read_json_file(path: Path, what: str) -> Any:
    """Parse the JSON file ``path``; a missing, non-regular (a FIFO, a directory), malformed or
    too deeply nested file raises ``ValueError`` naming it.

    ``what`` says what the file is, e.g. ``"label graph file"``, for the message.
    """
    try:
        text = read_text(path, what)
    except FileNotFoundError:
        raise ValueError(f"{what} {str(path)!r} does not exist") from None
    except OSError as error:  # an I/O error while reading
        raise ValueError(f"{what} {str(path)!r} cannot be read: {error.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as error:  # malformed, or an integer beyond Python's digit limit
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {error}") from None
    except RecursionError:  # the parser recurses once per nesting level
        raise ValueError(
            f"{what} {str(path)!r} is nested too deeply to be parsed (more than about "
            f"{sys.getrecursionlimit()} levels)"
        ) from None
