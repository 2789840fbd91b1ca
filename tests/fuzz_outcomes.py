"""Outcome counts of a fuzz test, checked by the test itself once all its examples have run.

A fuzzer that only ever accepts (or only ever refuses) its inputs tests nothing. The check runs at
the end of the fuzz test it decorates, not in a later summary test, so that it holds whether the
test runs alone, with its file, or in any order.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

Test = TypeVar("Test", bound=Callable[..., None])


class FuzzOutcomes:
    """``record(fuzzer, outcome)`` per example; ``@checked("fuzzer")`` over the ``@given`` test."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.counts: Counter[tuple[str, str]] = Counter()

    def record(self, fuzzer: str, outcome: str) -> None:
        self.counts[(fuzzer, outcome)] += 1

    def checked(self, prefix: str) -> Callable[[Test], Test]:
        """Runs the test, then requires ``accepted`` and at least one other outcome among the
        examples it recorded under fuzzer names starting with ``prefix``; prints the counts
        (``pytest -s``)."""

        def decorate(test: Test) -> Test:
            @functools.wraps(test)
            def run(*args: Any, **kwargs: Any) -> None:
                before = self.counts.copy()
                test(*args, **kwargs)
                new = {
                    key: count - before[key]
                    for key, count in sorted(self.counts.items())
                    if key[0].startswith(prefix) and count > before[key]
                }
                for (fuzzer, outcome), count in new.items():
                    print(f"fuzz {self.suite} {fuzzer:<16} {outcome:<24} {count}")
                outcomes = {outcome for _, outcome in new}
                assert "accepted" in outcomes, f"{prefix}: no example was accepted: {new}"
                assert outcomes - {"accepted"}, f"{prefix}: no example was refused: {new}"

            return run  # type: ignore[return-value]

        return decorate
