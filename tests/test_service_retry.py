from __future__ import annotations

import itertools
import random

import pytest

from quaint.service.retry import jittered_backoff, parse_retry_after


def test_backoff_is_capped_and_jittered() -> None:
    delays = list(itertools.islice(jittered_backoff(5, 60, rng=random.Random(1)), 50))
    assert all(2.5 <= d <= 60 for d in delays)
    assert delays[0] <= 5
    assert max(delays[10:]) > 30  # grows toward the cap
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="initial"):
        next(jittered_backoff(0, 10))
    with pytest.raises(ValueError, match="initial"):
        next(jittered_backoff(10, 5))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 2 ", 2.0),
        (None, 30.0),
        ("soon", 30.0),
        ("-1", 30.0),
        ("inf", 30.0),
        ("1e400", 30.0),
        ("nan", 30.0),
    ],
)
def test_retry_after(header: str | None, expected: float) -> None:
    assert parse_retry_after(header, 30.0) == expected
