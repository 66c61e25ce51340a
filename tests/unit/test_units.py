"""Durations as operators write them."""

from __future__ import annotations

import pytest

from drwatch.units import MAX_DURATION_S, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0), ("7d", 604800.0), (12, 12.0)],
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    """Each unit converts to seconds; a bare number is seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "5", "5 minutes", "-3s", -1, True, None, "1y"])
def test_parse_duration_rejects(bad: object) -> None:
    """Anything else is refused with a message that shows the expected form."""
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.25, "250ms"), (90, "90s"), (300, "5m"), (7200, "2h")]
)
def test_format_duration(seconds: float, text: str) -> None:
    """The shortest exact form is used in messages."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "bad",
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        10**4000,
        "999999999999999999999d",
        "3651d",
        "9" * 4000 + "s",
        "1e9s",
    ],
)
def test_parse_duration_refuses_non_finite_and_absurd(bad: object) -> None:
    """nan, infinities, 4,000-digit numbers and durations beyond ten years are refused
    with a ValueError (never an OverflowError, never a silent nan)."""
    with pytest.raises(ValueError, match="duration") as err:
        parse_duration(bad)
    assert len(str(err.value)) < 200


def test_parse_duration_upper_bound_is_inclusive() -> None:
    """Ten years is the longest duration accepted."""
    assert parse_duration("3650d") == MAX_DURATION_S
    assert parse_duration(MAX_DURATION_S) == MAX_DURATION_S
