"""How the data layer words its one-line messages: counts, lists cut short, cell values, a library's reason."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["REASON_LIMIT", "cut", "plural", "reason", "shown_value"]

REASON_LIMIT = 200  # characters kept of a library's error message


def plural(n: int, noun: str) -> str:
    """Return "1 noun" or "n nouns"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def cut(items: Sequence[str], limit: int, *, more: str = ", ... ({} more)") -> str:
    """Return items comma-separated, the first ``limit`` of them followed by ``more`` (with the number left out)."""
    shown = ", ".join(items[:limit])
    rest = len(items) - limit
    return shown if rest <= 0 else shown + more.format(rest)


def shown_value(value: object, *, squeeze: bool = False) -> str:
    """Return a short, one-line rendering of a cell value; ``squeeze`` makes each run of spaces one space."""
    text = repr(value) if isinstance(value, str | bytes) else repr(str(value))
    if squeeze:
        text = " ".join(text.split())
    return text if len(text) <= 40 else text[:36] + "...'"


def reason(exc: BaseException) -> str:
    """Return the first non-blank line of an exception's message, shortened, or its type's name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3] + "..."
