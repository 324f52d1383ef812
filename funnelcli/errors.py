"""Errors that carry a message meant for the user, phrased in Python's parameter names.

A :class:`UserError` is a mistake the user can fix (a bad file, column, parameter or recipe value); the CLI prints
its message as one line and exits with code 2. Anything else that escapes is a failure of ours (exit code 1).

The library speaks Python: ``FunnelDensity(dequantize="x").fit(df)`` is told ``dequantize='x' is unknown; use
'uniform' or 'none'``. The subclasses below keep the parameters they speak of as fields and phrase themselves
through a :class:`Names`; :mod:`funnelcli.cli.errors` phrases the same error with the flags' names (``--dequantize
'x' is unknown; use uniform or none``). A remedy names parameters as ``{columns}`` (the parameter) or
``{drop_constant=True}`` (the parameter given a value), which each :class:`Names` spells its own way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

_PLACEHOLDER = re.compile(r"\{(\w+)(?:=(\w+))?\}")


class UserError(ValueError):
    """A mistake in the user's input, with one line that names it and says what to do.

    A ``ValueError``, so library callers (and scikit-learn's tooling) can catch bad input the usual way.
    ``UserError("text")`` names no parameter; the subclasses do, as fields.
    """

    exit_code = 2

    def phrase(self, names: Names) -> str:
        """The message, with the parameters named as ``names`` names them (the text itself for a plain one)."""
        return ValueError.__str__(self)


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so that a hostile value cannot flood an error line."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deeply, or an integer with too many digits to print
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Names:
    """How a message names the parameters it speaks of: here as Python does (``latent_dim``, ``dequantize='x'``).

    :class:`funnelcli.cli.errors.FlagNames` names them as the command line does.
    """

    def name(self, parameter: str) -> str:
        return parameter

    def setting(self, parameter: str, value: Any) -> str:
        """A parameter and the value it was given: ``dequantize='x'``."""
        return f"{parameter}={shown(value)}"

    def suggestion(self, parameter: str, value: str) -> str:
        """A value to give, as a remedy writes it (``{drop_constant=True}``, ``{validation=FILE}``)."""
        return f"{parameter}=..." if value.isupper() else f"{parameter}={value}"

    def choices(self, values: Sequence[Any]) -> str:
        """``'a', 'b' or 'c'``."""
        return either([repr(value) for value in values])

    def fill(self, text: str) -> str:
        """``text`` with each ``{parameter}`` and ``{parameter=VALUE}`` spelled out."""
        return _PLACEHOLDER.sub(
            lambda m: self.name(m[1]) if m[2] is None else self.suggestion(m[1], m[2]),
            text,
        )


#: Python's names: what ``str()`` of every error uses.
PYTHON = Names()


def either(items: Sequence[str]) -> str:
    """``a, b or c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class _Phrased(UserError):
    """A UserError whose fields are its ``args`` (so that it pickles) and whose message is :meth:`phrase`'s."""

    def __str__(self) -> str:
        return self.phrase(PYTHON)

    def phrase(self, names: Names) -> str:  # pragma: no cover - every subclass phrases itself
        raise NotImplementedError


class BadValue(_Phrased):
    """``parameter`` was given ``value``, which ``why`` explains is wrong: ``reduce=1.5 is not a fraction ...``."""

    def __init__(self, parameter: str, value: Any, why: str):
        super().__init__(parameter, value, why)
        self.parameter, self.value, self.why = parameter, value, why

    def phrase(self, names: Names) -> str:
        return f"{names.setting(self.parameter, self.value)} {names.fill(self.why)}"


class UnknownChoice(BadValue):
    """``parameter`` was given ``value``, which is none of ``choices``: ``dequantize='x' is unknown; use ...``."""

    def __init__(self, parameter: str, value: Any, choices: Sequence[Any]):
        _Phrased.__init__(self, parameter, value, tuple(choices))
        self.parameter, self.value, self.choices = parameter, value, tuple(choices)
        self.why = "is unknown"

    def phrase(self, names: Names) -> str:
        return f"{names.setting(self.parameter, self.value)} is unknown; use {names.choices(self.choices)}"


class OutOfRange(_Phrased):
    """``parameter`` must be ``expected`` and is not: ``seed must be a whole number in 0..N, got -1``."""

    def __init__(self, parameter: str, value: Any, expected: str):
        super().__init__(parameter, value, expected)
        self.parameter, self.value, self.expected = parameter, value, expected

    def phrase(self, names: Names) -> str:
        return f"{names.name(self.parameter)} must be {self.expected}, got {shown(self.value)}"


class Misused(_Phrased):
    """``parameters`` were given where, or together where, they do not apply: ``iw_samples applies to VAE models
    only; ...``, ``latent_dims and reduce both give the sizes to try; ...``. ``why`` may name parameters."""

    def __init__(self, parameters: Sequence[str], why: str):
        super().__init__(tuple(parameters), why)
        self.parameters, self.why = tuple(parameters), why

    def phrase(self, names: Names) -> str:
        return f"{_and([names.name(p) for p in self.parameters])} {names.fill(self.why)}"


class Refused(_Phrased):
    """Input that cannot be used as it is: ``problem`` (plain text, never parsed for names) and ``remedy``, which
    names the parameters that fix it (``leave them out with {columns} or pass {drop_constant=True}``)."""

    def __init__(self, problem: str, remedy: str):
        super().__init__(problem, remedy)
        self.problem, self.remedy = problem, remedy

    @property
    def parameters(self) -> list[str]:
        """The parameters the remedy names."""
        return [m[1] for m in _PLACEHOLDER.finditer(self.remedy)]

    def phrase(self, names: Names) -> str:
        return f"{self.problem}; {names.fill(self.remedy)}"


class ConstantColumns(Refused):
    """``columns`` have one value each (``where``: in the table, or in its training rows), so no density."""

    def __init__(self, columns: Sequence[str], where: str = ""):
        names = ", ".join(repr(c) for c in columns)
        _Phrased.__init__(self, tuple(columns), where)
        self.columns, self.where = tuple(columns), where
        self.problem = f"column(s) {names} are constant{' ' + where if where else ''} and have no density"
        self.remedy = "leave them out with {columns} or pass {drop_constant=True}"


#: Every kind of UserError that names parameters (the tests check that each is a UserError).
PHRASED = (BadValue, UnknownChoice, OutOfRange, Misused, Refused, ConstantColumns)
