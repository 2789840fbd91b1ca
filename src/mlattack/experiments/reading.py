"""Reading one dataset item, retried when the error looks transient (a network disk's hiccup).

A missing file or one that cannot be decoded fails the same way every time and is not retried; an
``OSError`` whose ``errno`` says the operation may succeed later (EIO, EAGAIN, ETIMEDOUT, ...) is
retried :data:`READ_ATTEMPTS` times in all, with growing pauses, before it is raised.
"""

from __future__ import annotations

import errno
import time
from typing import Any

from torch.utils.data import Dataset

READ_ATTEMPTS = 3
RETRY_PAUSE_S = 0.05  # before the 2nd attempt; multiplied by 4 before each later one
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EIO", "EAGAIN", "EINTR", "ETIMEDOUT", "ESTALE", "EBUSY", "ECONNRESET", "ENOLCK")
    if hasattr(errno, name)
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from is an OSError with a transient errno."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in TRANSIENT_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def read_item(dataset: Dataset[Any], index: int) -> Any:
    """``dataset[index]``, retried while the error is transient (:func:`is_transient`)."""
    pause = RETRY_PAUSE_S
    for attempt in range(1, READ_ATTEMPTS + 1):
        try:
            return dataset[index]
        except OSError as exc:
            if attempt == READ_ATTEMPTS or not is_transient(exc):
                raise
        time.sleep(pause)
        pause *= 4
    raise AssertionError("unreachable")  # pragma: no cover
