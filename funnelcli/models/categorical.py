"""P(k | c): the probability mass of a mixed model's categorical columns (docs/maths.md, section 1.9).

A mixed model of continuous columns x and modelled categorical columns k = (k_1, ..., k_M) is

    log p(x, k | c) = log P(k | c) + log p(x | k, c)

where p(x | k, c) is the conditional flow of section 1.8 with the one-hot k beside the conditions c in its context,
and P(k | c) is this module's :class:`CategoricalModel`: an autoregressive product of add-alpha smoothed empirical
conditional frequencies, counted on the training rows,

    P(k | c) = prod_m P(k_m | c, k_<m),    P(k_m = v | h) = (n(h, v) + alpha) / (n(h) + alpha K_m)

with h = (c, k_1, ..., k_{m-1}) the row's prefix, n(.) the number of training rows that begin with it, K_m the
number of categories of column m and alpha = :data:`ALPHA` = 1 (Laplace's rule). With one column and no conditions
it is the smoothed frequency (n_v + 1) / (n + K).

Why counts rather than a network: each factor sums to 1 over v for every prefix, seen or not (an unseen prefix
gets the uniform 1 / K_m), so the product sums to 1 over all prod_m K_m combinations, exactly, by construction; it
needs no training, cannot diverge, and is the maximum-likelihood answer on every prefix that is well populated. An
MLP on one-hot prefixes would share strength between rare prefixes, but it adds an optimisation (and its failure
modes) for a handful of columns whose combinations a table of any size mostly covers. The conditions c it counts
within must therefore be categorical: a numeric condition has no prefix to count, and is refused upstream.

Stored as the distinct observed combinations ``codes`` (U, G + M) of category indices (the G conditions first)
and their ``counts`` (U,): every prefix count n(h) is a sum of these. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from funnelcli.conditions import Condition, one_hot
from funnelcli.errors import UserError

#: The additive smoothing of every conditional frequency: each category is counted once more than it was seen.
ALPHA = 1.0
#: How the errors name a modelled categorical column (a condition is a "condition column").
ROLE = "categorical"


@dataclass(frozen=True, eq=False)
class CategoricalModel:
    """P(k | c) of M modelled categorical ``columns`` given G categorical conditions ``given`` (G may be 0).

    ``codes`` (U, G + M) int64: the distinct combinations of category indices seen in the training rows, the
    conditions' first, each index a position in its column's ``categories``; ``counts`` (U,) int64 > 0: how many
    training rows hold each. ``alpha``: the smoothing (module docstring).
    """

    columns: tuple[Condition, ...]
    given: tuple[Condition, ...]
    codes: np.ndarray
    counts: np.ndarray
    alpha: float = ALPHA

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: tuple[Condition, ...], given: tuple[Condition, ...] = ()):
        """Count the combinations in ``frame`` (the training rows, holding every column of ``given`` and
        ``columns``)."""
        indices = cls._all_indices(frame, given, columns)
        codes, counts = np.unique(indices, axis=0, return_counts=True)
        return cls(tuple(columns), tuple(given), codes.astype(np.int64), counts.astype(np.int64))

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def width(self) -> int:
        """The one-hot width of the modelled columns in the flow's context: the sum of their category counts."""
        return sum(column.width for column in self.columns)

    @property
    def sizes(self) -> list[int]:
        """K_m, the number of categories of each modelled column."""
        return [len(column.categories) for column in self.columns]

    # -- rows in, numbers out ----------------------------------------------------------------------------------

    def indices(self, X) -> np.ndarray:
        """The category indices of the rows of ``X`` (a DataFrame), shape (N, G + M), the conditions first; a
        missing column, a missing value or an unseen category is a :class:`UserError` that names it."""
        if not isinstance(X, pd.DataFrame):
            raise UserError(
                f"this model gives a probability to the categorical column(s) {', '.join(self.names)}; give it a "
                "DataFrame that holds them"
            )
        missing = [c.name for c in (*self.given, *self.columns) if c.name not in X.columns]
        if missing:
            raise UserError(
                f"the data lack the column(s) {', '.join(repr(c) for c in missing)}; the model's categorical "
                f"column(s) are {', '.join(self.names)}"
            )
        return self._all_indices(X, self.given, self.columns)

    def given_indices(self, conditions: pd.DataFrame) -> np.ndarray:
        """The category indices of the conditions of ``conditions`` (a DataFrame holding them), shape (N, G)."""
        return self._all_indices(conditions, self.given, ())

    def encode(self, X) -> np.ndarray:
        """The modelled columns of ``X`` one-hot, side by side, shape (N, :attr:`width`): their part of the flow's
        context."""
        return self.one_hot(self.indices(X)[:, len(self.given) :])

    def one_hot(self, drawn: np.ndarray) -> np.ndarray:
        """The modelled columns' indices ``drawn`` (N, M) one-hot, shape (N, :attr:`width`)."""
        return np.concatenate([one_hot(drawn[:, m], size) for m, size in enumerate(self.sizes)], axis=1)

    def log_prob(self, X) -> np.ndarray:
        """log P(k | c) of the rows of ``X``, shape (N,), in nats: a log-probability (a mass, <= 0)."""
        return self.log_prob_indices(self.indices(X))

    def log_prob_indices(self, indices: np.ndarray) -> np.ndarray:
        """log P(k | c) of rows of category indices ``indices`` (N, G + M), shape (N,)."""
        g = len(self.given)
        total = np.zeros(len(indices))
        for m, size in enumerate(self.sizes):
            level = g + m
            joint = self._count(indices[:, : level + 1])
            prefix = self._count(indices[:, :level])
            total += np.log(joint + self.alpha) - np.log(prefix + self.alpha * size)
        return total

    def probabilities(self, prefixes: np.ndarray) -> np.ndarray:
        """P(k_m = v | h) for every v of the next column m = width(prefixes) - G, shape (R, K_m), one row per
        prefix h in ``prefixes`` (R, G + m)."""
        level = prefixes.shape[1]
        size = self.sizes[level - len(self.given)]
        counts = np.zeros((len(prefixes), size))
        if level == 0:
            np.add.at(counts, (0, self.codes[:, 0]), self.counts)
            counts = np.broadcast_to(counts[:1], counts.shape).copy()
        else:
            group = _positions(self.codes[:, :level], prefixes)  # which prefix each stored combination begins with
            seen = group >= 0
            np.add.at(counts, (group[seen], self.codes[seen, level]), self.counts[seen])
        return (counts + self.alpha) / (counts.sum(axis=1, keepdims=True) + self.alpha * size)

    def draw(self, uniforms: np.ndarray, given: np.ndarray | None = None) -> np.ndarray:
        """Category indices (N, M) drawn from P(k | c) by inverting each factor's distribution function at
        ``uniforms`` (N, M) in [0, 1), column after column; ``given`` (N, G): the rows' conditions' indices."""
        rows = len(uniforms)
        drawn = np.zeros((rows, 0), dtype=np.int64) if given is None else np.asarray(given, dtype=np.int64)
        for m, size in enumerate(self.sizes):
            if drawn.shape[1] == 0:  # no conditions, first column: one (empty) prefix for every row
                prefixes, group = drawn[:1], np.zeros(rows, dtype=np.int64)
            else:
                prefixes, group = np.unique(drawn, axis=0, return_inverse=True)
            cdf = np.cumsum(self.probabilities(prefixes), axis=1)[group.reshape(-1)]
            # The first v with u < F(v); rounding can leave F(K - 1) a hair under 1, so the last is the fallback.
            choice = np.minimum((uniforms[:, m : m + 1] >= cdf).sum(axis=1), size - 1)
            drawn = np.concatenate([drawn, choice[:, None]], axis=1)
        return drawn[:, len(self.given) :]

    def frame(self, drawn: np.ndarray, index=None) -> pd.DataFrame:
        """The modelled columns of drawn indices (N, M), in their fitted dtypes (:meth:`Condition.values`)."""
        index = pd.RangeIndex(len(drawn)) if index is None else index
        return pd.concat([c.values(drawn[:, m]).set_axis(index) for m, c in enumerate(self.columns)], axis=1)

    # -- the model folder --------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """What ``model.json`` records (field ``categorical``); the counts go in the weights file
        (:meth:`tensors`). The conditions it counts within are the model's ``conditions``, all of them."""
        return {"alpha": self.alpha, "columns": [c.to_dict() for c in self.columns], "combinations": len(self.counts)}

    def tensors(self) -> dict[str, np.ndarray]:
        """The counts as the weights file stores them, beside the flow's weights."""
        return {"categorical.codes": self.codes, "categorical.counts": self.counts}

    @classmethod
    def from_stored(
        cls, entry: dict[str, Any], given: tuple[Condition, ...], codes: np.ndarray, counts: np.ndarray
    ) -> CategoricalModel:
        """The model ``model.json``'s ``categorical`` field and the weights' counts describe; a ValueError when the
        counts do not fit the categories (another model's weights, or edited ones)."""
        columns = tuple(Condition.from_dict(item) for item in entry["columns"])
        sizes = [len(c.categories) for c in (*given, *columns)]
        codes, counts = np.asarray(codes), np.asarray(counts)
        if codes.dtype != np.int64 or counts.dtype != np.int64:
            raise ValueError("the categorical counts must be int64")
        if codes.ndim != 2 or codes.shape != (entry["combinations"], len(sizes)) or counts.shape != (len(codes),):
            raise ValueError("the categorical counts have the wrong shape")
        if len(codes) and ((codes < 0).any() or (codes >= np.asarray(sizes)).any() or (counts < 1).any()):
            raise ValueError("the categorical counts name categories the model does not have")
        if len(np.unique(codes, axis=0)) != len(codes):
            raise ValueError("the categorical counts list a combination twice")
        return cls(columns, tuple(given), codes, counts, float(entry["alpha"]))

    # -- helpers -----------------------------------------------------------------------------------------------

    @staticmethod
    def _all_indices(frame: pd.DataFrame, given, columns) -> np.ndarray:
        parts = [c.indices(frame[c.name]) for c in given] + [c.indices(frame[c.name], ROLE) for c in columns]
        return np.stack(parts, axis=1) if parts else np.zeros((len(frame), 0), dtype=np.int64)

    def _count(self, keys: np.ndarray) -> np.ndarray:
        """n(h) for each row's prefix h in ``keys`` (N, L): the training rows whose first L indices are h."""
        if keys.shape[1] == 0:
            return np.full(len(keys), float(self.counts.sum()))
        stored = self.codes[:, : keys.shape[1]]
        both, inverse = np.unique(np.concatenate([stored, keys]), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        sums = np.bincount(inverse[: len(stored)], weights=self.counts, minlength=len(both))
        return sums[inverse[len(stored) :]]


def _positions(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """For each row of ``keys`` (U, L), its position among the distinct rows ``table`` (R, L), or -1."""
    both, inverse = np.unique(np.concatenate([table, keys]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    where = np.full(len(both), -1, dtype=np.int64)
    where[inverse[: len(table)]] = np.arange(len(table))
    return where[inverse[len(table) :]]
