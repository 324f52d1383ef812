"""``FunnelDensity``: the library's front door, a scikit-learn estimator for exact densities.

The CLI is a thin skin over this class: ``funnel train`` is ``fit`` then ``save``, ``funnel score`` is
``load`` then ``score_samples``, and so on, so both give the same numbers. ``fit`` reads validate, prepare,
build, train: the checks of settings and rows are :mod:`funnelcli.estimator_checks`, the preparation
:mod:`funnelcli.preparation`, the training (devices, process groups, where the rows live)
:func:`funnelcli.training.fit_rows`; ``save`` and ``load`` are :mod:`funnelcli.estimator_io`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.base import BaseEstimator, TransformerMixin

from funnelcli import estimator_io
from funnelcli.conditions import Conditions, categories_of, check_names, context_width, fit_conditions
from funnelcli.errors import BadValue, Misused, OutOfRange, Refused, UserError, shown
from funnelcli.estimator_checks import (
    AUTO,
    MAX_SAMPLES,
    MAX_TEMPERATURE,
    SklearnParams,
    check_sampling,
    checked_settings,
    choice_candidates,
    drop_constant,
    resolved_recipe,
    row_count,
    select,
    training_rows,
    validate,
    whole,
)
from funnelcli.models import Recipe, build_model
from funnelcli.models.categorical import CategoricalModel
from funnelcli.models.decode import decode
from funnelcli.models.families import DEFAULT_MAX_PARAMETERS, check_size
from funnelcli.models.image_plan import holds
from funnelcli.models.recipe import MAX_COLUMNS, MAX_SEED
from funnelcli.preparation import (
    PreparedRows,
    check_bits,
    input_dtypes,
    modelled_dtypes,
    pixel_values,
    prepare_rows,
    split_rows,
)
from funnelcli.training import MAX_NONFINITE_IN_A_ROW, TrainingDiverged, TrainingSummary, fit_rows

__all__ = [
    "AUTO",
    "LATENT_PREFIX",
    "MAX_IW_SAMPLES",
    "MAX_SAMPLES",
    "MAX_TEMPERATURE",
    "FunnelDensity",
    "check_sampling",
]

log = logging.getLogger("funnelcli")

_BATCH = 8192
#: The most importance samples per row ``score_samples(iw_samples=K)`` takes. Rows are scored in chunks of
#: about 8192 / K, so that a chunk holds no more samples than a chunk of plain scoring does.
MAX_IW_SAMPLES = 10_000
#: What an auto-fitted estimator keeps of its own rather than taking from the chosen level's estimator.
_OWN_VIEW = ("n_features_in_", "feature_names_in_", "dropped_constant_columns_", "dtypes_")
#: Seed of the dequantization noise used when scoring, so that a score is reproducible.
SCORE_NOISE_SEED = 0
#: The latent columns are ``z0 ... z{k-1}``: the names ``funnel encode`` writes by default (its ``--prefix``).
LATENT_PREFIX = "z"


class FunnelDensity(SklearnParams, TransformerMixin, BaseEstimator):
    """Exact density estimation with a (funnel) normalizing flow.

    Parameters
    ----------
    recipe : str, path or Recipe, default "f-nsf"
        A bundled recipe name (``funnel recipes``), a path to a TOML recipe, or a :class:`Recipe`.
    reduce, latent_dim, ansatz, steps, batch_size, lr, seed : optional
        Override the recipe's fields of the same names. ``reduce`` (the fraction of dimensions to remove),
        ``latent_dim`` (the number to keep, 1 to D - 1; not together with ``reduce``) and ``ansatz`` need a
        funnel family or the VAE. ``latent_dim="auto"`` chooses the size in ``fit`` by a sweep of the default
        ladder (:mod:`funnelcli.sweep`; a Gaussian ansatz unless ``ansatz`` says otherwise): the smallest size
        within one standard error of the best.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where to train and evaluate; ``auto`` takes a GPU when torch sees one.
    val_fraction : float, default 0.1
        Share of the rows held out for validation (early stopping) when ``fit`` gets no ``validation``.
    dequantize : {"uniform", "none"}, default "uniform"
        Integer-valued columns get noise u ~ U[0, 1) (``uniform``): the model's log-likelihood then lower-bounds
        their log-probability, E_u log p(x + u) <= log P(x). ``none`` fits them as they are (the likelihood can
        run off to infinity on the integers).
    drop_constant : bool, default False
        Leave out constant columns (which have no density) instead of refusing them.
    bits : int, optional
        The columns are pixels of this bit depth (1 to 16): whole numbers in [0, 2^bits), each dequantized with
        u ~ U[0, 1) (whatever ``dequantize`` says; none is left out as constant). Scores are then log-densities of
        the dequantized pixels in their own units, so -log2 p(x) / D is the image papers' bits per dimension
        (docs/evaluation.md). Samples and decoded rows are whole numbers clipped to [0, 2^bits - 1]. Recorded in the
        model folder; scoring refuses values that are not such pixels.
    source_bits : int, optional
        With ``bits``: the given pixels have this many bits (e.g. 8) and are reduced to ``bits`` (e.g. 5) as the
        Glow and funnel papers do, x // 2^(source_bits - bits), in ``fit`` and in scoring alike. Model units, samples
        and bits per dimension are those of the reduced pixels.
    max_parameters : int, default 100_000_000
        ``fit`` refuses a model with more parameters than this, counted from the recipe before it is built;
        ``None`` means the default.
    conditional_columns : list of str, optional
        Fit p(x | c), the density of the other columns given these (a DataFrame's columns, any dtype): numeric
        ones are standardised, categorical ones one-hot encoded (:mod:`funnelcli.conditions`). Scoring,
        ``transform`` and ``inverse_transform`` then need them; ``sample`` takes them as ``conditions``. Every
        family: the VAE becomes a conditional VAE, q(z | x, c) and p(x | z, c), whose scores stay lower bounds on
        log p(x | c). Not with ``latent_dim="auto"``.
    categorical_columns : list of str, optional
        Categorical columns of a DataFrame (strings, booleans, pandas categoricals, or integer codes such as
        ``sex`` = 1, 2). One that is also in ``conditional_columns`` is a condition encoded by category (given, not
        modelled). One that is not is *modelled*: the model becomes the mixed likelihood
        log p(x, k | c) = log P(k | c) + log p(x | k, c), with P(k | c) smoothed empirical frequencies (add-one,
        autoregressive over several columns: :mod:`funnelcli.models.categorical`) and p(x | k, c) the conditional
        flow with k one-hot in its context (docs/maths.md, section 1.9). Conditions beside modelled categorical
        columns must be categorical too. Scores then mix a probability mass and a density
        (``mixed_likelihood_``); ``sample`` draws k, then x; ``transform`` needs the categorical columns.
    **overrides
        Any other recipe field by name (``flow_steps=6``, ``hidden_features=64``, ``dropout=0.1``...).

    Attributes (after ``fit`` or ``load``)
    ----------
    model_ : DensityModel, a FunnelFlow or the VAE (:mod:`funnelcli.models.contract`)
    conditions_ : Conditions or None, a conditional model's condition columns and their encoding
    categorical_ : CategoricalModel or None, a mixed model's modelled categorical columns and their mass P(k | c)
    mixed_likelihood_ : bool, True when scores add a log-probability mass (the categorical columns') to a density
    context_columns_ : list of str, the columns read as they are: the conditions, then the modelled categorical ones
    recipe_ : Recipe, with every override applied
    columns_ : list of str, the modelled columns (``x0, x1, ...`` for arrays)
    feature_names_in_ : array of str, only when fitted on a DataFrame
    n_features_in_, latent_dim_ : int
    dequantized_columns_, dropped_constant_columns_ : list of str
    summary_ : dict, the training summary; history_ : list of dict, the validation curve
    is_bound_ : bool, True for the VAE, whose scores are lower bounds on log p(x)
    sweep_ : DataFrame, with ``latent_dim="auto"``: a row per size tried and baseline; ``sweep_rule_``: the choice
    choice_ : dict, below a recipe's ``choose_rows`` (only then): the recipe kept and each candidate's validation score

    DataFrames: fitted on one, ``sample`` and ``inverse_transform`` return DataFrames in ``columns_``; ``transform``
    returns one (columns ``z0 ... z{k-1}``, the rows' index kept) after ``set_output(transform="pandas")``, as every
    scikit-learn transformer does.

    Examples
    --------
    >>> model = FunnelDensity("small-f-nsf", reduce=0.5, steps=200).fit(train)   # doctest: +SKIP
    >>> model.score_samples(test)        # exact log p(x) per row, nats           # doctest: +SKIP
    >>> model.transform(test)            # latent code, (N, latent_dim_)          # doctest: +SKIP
    >>> model.sample(100, random_state=0)                                          # doctest: +SKIP
    >>> model.set_output(transform="pandas").transform(test)   # z0 ... z{k-1}   # doctest: +SKIP
    >>> model.inverse_transform(model.transform(test), mean=True)                 # doctest: +SKIP
    >>> cond = FunnelDensity("nsf", conditional_columns=["species"]).fit(train)    # doctest: +SKIP
    >>> cond.score_samples(test)         # log p(x | species) per row              # doctest: +SKIP
    >>> cond.sample(conditions=test[["species"]], random_state=0)  # a row each   # doctest: +SKIP
    >>> mixed = FunnelDensity("nsf", categorical_columns=["species"]).fit(train)   # doctest: +SKIP
    >>> mixed.score_samples(test)        # log P(species) + log p(x | species)      # doctest: +SKIP
    >>> mixed.sample(100, random_state=0)   # species drawn, then x given it        # doctest: +SKIP
    """

    def __init__(
        self,
        recipe: str | Path | Recipe = "f-nsf",
        *,
        reduce: float | None = None,
        latent_dim: int | None = None,
        ansatz: str | None = None,
        steps: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        seed: int | None = None,
        device: str = "auto",
        val_fraction: float = 0.1,
        dequantize: str = "uniform",
        drop_constant: bool = False,
        max_parameters: int | None = DEFAULT_MAX_PARAMETERS,
        conditional_columns: list[str] | None = None,
        categorical_columns: list[str] | None = None,
        bits: int | None = None,
        source_bits: int | None = None,
        **overrides: Any,
    ):
        self.recipe = recipe
        self.reduce = reduce
        self.latent_dim = latent_dim
        self.ansatz = ansatz
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.device = device
        self.val_fraction = val_fraction
        self.dequantize = dequantize
        self.drop_constant = drop_constant
        self.max_parameters = max_parameters
        self.conditional_columns = conditional_columns
        self.categorical_columns = categorical_columns
        self.bits = bits
        self.source_bits = source_bits
        # Checked at fit, as scikit-learn asks: __init__ only stores what it is given.
        for name, value in overrides.items():
            setattr(self, name, value)

    def resolved_recipe(self, rows: int | None = None) -> Recipe:
        """The recipe with this estimator's overrides applied (validated; ``max_parameters`` too), for a table of
        ``rows`` rows when given: below its ``small_rows`` a recipe gives way to its ``small_recipe``."""
        return resolved_recipe(self, rows)

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(
        self,
        X,
        y=None,
        validation=None,
        *,
        callback: Callable[[dict], None] | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        checkpoint_every: int = 0,
        max_nonfinite: int = MAX_NONFINITE_IN_A_ROW,
        compile: bool = False,
    ) -> FunnelDensity:
        """Fit by maximum likelihood; keep the weights with the best validation log-likelihood.

        Parameters
        ----------
        X : DataFrame or array of shape (n_samples, n_features)
            Numeric, finite rows. A DataFrame's column names are kept and used to match columns later.
        y : ignored
        validation : DataFrame or array, optional
            Rows held out for early stopping; default: a seeded ``val_fraction`` of ``X``.
        callback : callable, optional
            Receives a dict after every step (``step``, ``steps``, and at validation passes the train and
            validation log-likelihoods; while recipes compete, ``recipe`` names the candidate training).
        checkpoint_dir : path, optional
            Where to keep ``latest.safetensors`` (the whole training state) and ``best.safetensors``; SIGINT and
            SIGTERM then stop after the step, write both and raise :class:`~funnelcli.training.TrainingInterrupted`.
        resume : bool, default False
            Continue from ``checkpoint_dir``'s latest checkpoint (same data, settings, device), to the bit.
        checkpoint_every : int, default 0
            Also write the checkpoints every this many steps (0: only when interrupted).
        max_nonfinite : int, default 20
            Steps with a non-finite loss or gradient (skipped) in a row after which training stops with
            :class:`~funnelcli.training.TrainingDiverged`; the estimator then holds the best weights so far.
        compile : bool, default False
            Compile the training step (:func:`torch.compile`): about a minute's start-up on a CPU for faster steps;
            the weights differ from an uncompiled run's by float rounding.

        Notes
        -----
        Under ``torchrun --nproc_per_node=N`` (or a process group the caller initialised) each process trains on
        every N-th row, ``batch_size // N`` a step, and every rank ends with the same weights. Give every rank the
        same ``X``, :meth:`save` on rank 0 only, and call :func:`funnelcli.distributed.leave` on every rank.
        """
        recipe, limit = checked_settings(self, X, validation)
        check_bits(self.bits, self.source_bits)
        options = {"callback": callback, "checkpoint_dir": checkpoint_dir, "resume": resume, "compile": compile}
        vars(self).pop("choice_", None)  # an earlier fit's
        rows = row_count(X)
        chooses = rows is not None and self.latent_dim != AUTO
        candidates = choice_candidates(self, training_rows(self, rows, validation is not None)) if chooses else []
        if candidates:
            return _fit_choice(
                self,
                X,
                validation,
                candidates,
                checkpoint_every=checkpoint_every,
                max_nonfinite=max_nonfinite,
                **options,
            )
        X, validation, conditions, categories, modelled = _split_conditions(self, X, validation, recipe)
        if self.latent_dim == AUTO:
            return _fit_auto(self, X, validation, recipe)
        width = context_width(conditions[0].columns, categories) if conditions else 0
        frame, held_out = _validated_rows(self, X, validation, recipe, limit, width)
        if self.bits is not None:
            frame = pixel_values(frame, self.bits, self.source_bits)
            held_out = None if held_out is None else pixel_values(held_out, self.bits, self.source_bits, "validation")
        rows = _prepared(self, frame, held_out, recipe, input_dtypes(X), conditions)
        self.conditions_, self.categorical_ = _fitted_context(rows.train_conditions, categories, modelled)
        self.recipe_ = recipe
        self.model_ = build_model(recipe, rows.mean, rows.std, context_features=_width(self))
        _train(self, rows, recipe, checkpoint_every=checkpoint_every, max_nonfinite=max_nonfinite, **options)
        return self

    @property
    def is_bound_(self) -> bool:
        """Whether scores are lower bounds on log p(x) (the VAE) rather than exact log-likelihoods."""
        _check_fitted(self)
        return bool(self.model_.is_bound)

    @property
    def mixed_likelihood_(self) -> bool:
        """Whether scores are mixed likelihoods, log P(k | c) + log p(x | k, c): a log-probability mass of the
        modelled categorical columns plus a log-density of the others (``categorical_columns`` beyond the
        conditions). They are still exact, but only differences between models of the same columns compare."""
        _check_fitted(self)
        return getattr(self, "categorical_", None) is not None

    def score_samples(self, X, *, iw_samples: int | None = None, row_offset: int = 0) -> np.ndarray:
        """Exact log p(x) per row, in nats, in the units of the data, shape (n_samples,).

        Dequantized (integer) columns get u ~ U[0, 1) with a fixed seed: an unbiased estimate of E_u log p(x + u),
        a lower bound on the integers' log-probability. A VAE's (``is_bound_``) is a bound too: the ELBO, or with
        ``iw_samples=K`` the importance-weighted bound, tighter as K grows. ``row_offset``: the rows before ``X``
        in a file scored chunk by chunk, so that each row's noise does not depend on the chunking.

        A conditional model gives log p(x | c): ``X`` must hold the condition columns too (a category unseen in
        training is a :class:`UserError` naming the column and the value). A mixed model (``mixed_likelihood_``)
        gives log P(k | c) + log p(x | k, c), a log-mass of its categorical columns k plus a log-density of x: ``X``
        must hold the categorical columns too, and a category unseen in training is refused as above.
        """
        _check_fitted(self)
        return _scores(self, X, iw_samples, row_offset)

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per row (higher is better), so model selection can maximise it."""
        return float(np.mean(self.score_samples(X)))

    def transform(self, X) -> np.ndarray:
        """The latent code z = T(x), shape (n_samples, latent_dim_). Dequantized columns enter at x + 0.5.

        An array; after ``set_output(transform="pandas")`` a DataFrame with columns :meth:`get_feature_names_out`
        and ``X``'s index (scikit-learn's wrapper does that, whatever the type of ``X``). A VAE's code is its
        encoder's posterior mean. A conditional model's code is T(x; c): ``X`` must hold the condition columns, and
        a mixed model's is T(x; k, c): ``X`` must hold its categorical columns too.
        """
        _check_fitted(self)
        frame = _pixels(self, select(self, X)) + 0.5 * _dequantize_mask(self)
        return _batched(self.model_, frame, self.model_.encode, context=_context(self, X))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The names of :meth:`transform`'s columns, the latent code: ``z0 ... z{k-1}`` (k = ``latent_dim_``), as
        ``funnel encode`` names them. An array of str. ``input_features``, if given, must be the fitted columns
        (any names of the right length when fitted on an array); the output names do not depend on it."""
        _check_fitted(self)
        if input_features is not None:
            _check_input_features(self, input_features)
        return np.asarray([f"{LATENT_PREFIX}{j}" for j in range(self.latent_dim_)], dtype=object)

    def inverse_transform(
        self, Z, *, mean: bool = False, random_state: int | None = None, conditions=None
    ) -> np.ndarray | pd.DataFrame:
        """Rows in the data's units decoded from latent codes ``Z``, shape (n, latent_dim_) -> (n, n_columns).

        A bijection is inverted exactly; each funnel's dropped coordinates are drawn from its ansatz
        q(x_drop | z), or with ``mean=True`` set to the ansatz's centre: for a Gaussian ansatz its mean mu(z); for
        a flow ansatz the image T^-1(0; z) of its base distribution's zero (neither q's mean nor its mode in
        general); behind ``ansatz_spline``'s spline g, g^-1 of the inner ansatz's centre (for a Gaussian, q's
        coordinatewise median). A VAE draws from its Gaussian decoder p(x | z), or with ``mean=True`` returns the
        decoder's mean. A funnel's inverse is a right inverse, so ``transform(inverse_transform(Z))`` gives ``Z``
        back (up to float32 rounding, and when no column is dequantized); a flow without funnels (``nsf``,
        ``glow``) has ``inverse_transform(transform(X)) == X``.

        Dequantized columns are rounded down, as in :meth:`sample` (``transform`` feeds them at x + 0.5, so
        decoding a row's code gives its integers back). ``random_state`` (None or 0..2**32 - 1) seeds the draws
        as in :meth:`sample`; ``mean=True`` draws nothing. ``Z`` is an array, or a DataFrame whose columns
        ``z0 ... z{k-1}`` are taken by name when it has them all (else by position).

        Returns a DataFrame in ``columns_`` with ``Z``'s index when fitted on a DataFrame, else an array. Constant
        columns left out by ``drop_constant`` are not modelled and not returned. A conditional model decodes
        x = T^-1(z; c): ``conditions`` is a DataFrame of the condition columns, a row for each row of ``Z``; for a
        mixed model it holds the categorical columns too (they are the flow's context), which are not returned.
        """
        _check_fitted(self)
        if random_state is not None and not whole(random_state, 0, MAX_SEED):
            raise OutOfRange("random_state", random_state, f"a whole number in 0..{MAX_SEED}")
        codes = _latent_codes(self, Z)
        context = _given_context(self, conditions, len(codes))
        rows = _decoded(self, codes, bool(mean), random_state, context)
        return _as_fitted(self, rows, index=Z.index if isinstance(Z, pd.DataFrame) else None)

    def sample(
        self,
        n_samples: int | None = None,
        random_state: int | None = None,
        temperature: float = 1.0,
        *,
        conditions=None,
    ) -> np.ndarray | pd.DataFrame:
        """``n_samples`` (1 to 10,000,000) rows in the data's units, shape (n_samples, n_columns), dequantized
        columns rounded down to integers (as float64). ``temperature`` (in (0, 10]) scales the base distribution's
        standard deviation; ``random_state`` (0..2**32 - 1) seeds the draw and leaves torch's global RNG as it was,
        None draws from that global RNG (so two unseeded calls differ).

        A DataFrame with the modelled columns ``columns_`` when fitted on a DataFrame (or loaded from such a
        model), else an array. Constant columns left out by ``drop_constant`` are not modelled (their values are
        not recorded) and not returned. ``n_samples`` defaults to 1.

        A conditional model draws one row from p(x | c) for each row of ``conditions``, a DataFrame holding the
        condition columns; ``n_samples`` is then left out (or equal to ``len(conditions)``). The result is a
        DataFrame with ``conditions``' index: the condition columns as given, then the sampled columns.

        A mixed model draws its categorical columns k ~ P(k | c) first, then x ~ p(x | k, c); they come before the
        modelled columns, in the dtypes they were fitted in (integers, booleans, floats, pandas categoricals;
        others as strings).
        """
        _check_fitted(self)
        if self.conditions_ is None:
            if conditions is not None:
                raise Misused(["conditions"], "applies to conditional models only; this model has no conditions")
            n_samples = 1 if n_samples is None else n_samples
            check_sampling(n_samples, temperature, random_state)
            rows, drawn = _drawn(self, int(n_samples), float(temperature), random_state)
            if drawn is None:
                return _as_fitted(self, rows)
            return pd.concat([drawn, pd.DataFrame(rows, columns=list(self.columns_))], axis=1)
        if conditions is None:
            raise Refused(
                f"this model is conditional on {', '.join(self.conditions_.names)}",
                "pass {conditions} (a DataFrame holding those columns, a row for each draw)",
            )
        if n_samples is not None and not (whole(n_samples, 0, MAX_SAMPLES) and n_samples == len(conditions)):
            raise Misused(
                ["n_samples"],
                f"must be left out or equal len(conditions) = {len(conditions)} (one draw per row), got "
                f"{shown(n_samples)}",
            )
        check_sampling(len(conditions), temperature, random_state)
        context = self.conditions_.encode(conditions)
        given = None if self.categorical_ is None else self.categorical_.given_indices(conditions)
        rows, drawn = _drawn(self, len(conditions), float(temperature), random_state, context, given)
        parts = [conditions[self.conditions_.names]]
        if drawn is not None:
            parts.append(drawn.set_axis(conditions.index))
        parts.append(pd.DataFrame(rows, columns=list(self.columns_), index=conditions.index))
        return pd.concat(parts, axis=1)

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model folder (``model.safetensors``, ``model.json``, ``metrics.jsonl``)."""
        _check_fitted(self)
        return estimator_io.save(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", max_parameters: int | None = None) -> FunnelDensity:
        """Load a model folder written by :meth:`save` or ``funnel train`` (JSON and safetensors only), checked field
        by field, and against the weights' record of ``model.json``, before anything is built; the model, sized
        from its recipe, must not exceed ``max_parameters`` (default: the limit it was trained under)."""
        return estimator_io.load(cls, path, device=device, max_parameters=max_parameters)

    @property
    def context_columns_(self) -> list[str]:
        """The columns read as they are (any dtype) beside the numeric ``input_columns_``: the condition columns,
        then a mixed model's modelled categorical columns (empty for an unconditional, unmixed model). They make the
        flow's context; scoring, ``transform`` and ``funnel score``/``encode`` need every one of them in ``X``."""
        _check_fitted(self)
        parts = (self.conditions_, self.categorical_)
        return [name for part in parts if part is not None for name in part.names]

    @property
    def input_columns_(self) -> list[str]:
        """The columns ``fit`` was given, in order (``x0, x1, ...`` for arrays): what scoring reads. This
        includes constant columns left out with ``drop_constant``, which ``columns_`` (the modelled ones) lacks."""
        _check_fitted(self)
        if hasattr(self, "feature_names_in_"):
            return [str(c) for c in self.feature_names_in_]
        return [f"x{j}" for j in range(self.n_features_in_)]


# -- fitting: validate, prepare, train -----------------------------------------------------------------------


def _split_conditions(
    estimator: FunnelDensity, X, validation, recipe: Recipe
) -> tuple[Any, Any, tuple[pd.DataFrame, pd.DataFrame | None] | None, dict[str, tuple[str, ...]], list[str]]:
    """(X, validation) without the context columns (the conditions, then the modelled categorical columns), the
    context columns of both (None when there are none), the categories of the categorical ones
    (:func:`funnelcli.conditions.categories_of` all of X), and the names of the modelled categorical columns.

    Refused in one line: context columns of an array, a missing one, ``latent_dim="auto"``, and numeric
    conditions beside modelled categorical columns (P(k | c) is counted per category of c)."""
    names, categorical, modelled = check_names(estimator.conditional_columns, estimator.categorical_columns)
    if not names and not modelled:
        return X, validation, None, {}, []
    context = names + modelled
    parameter = ["conditional_columns"] if names else ["categorical_columns"]
    if estimator.latent_dim == AUTO:
        raise Misused(parameter, "cannot be used with {latent_dim}='auto' yet; choose a latent size")
    tables = {"X": X} if validation is None else {"X": X, "validation": validation}
    for label, table in tables.items():
        if not isinstance(table, pd.DataFrame):
            raise Misused(parameter, f"name columns of a DataFrame; {label} is {type(table).__name__}")
        for role, wanted in (("condition", names), ("categorical", modelled)):
            missing = [name for name in wanted if name not in table.columns]
            if missing:
                raise UserError(f"{label} lacks the {role} column(s) {', '.join(repr(c) for c in missing)}")
    if len(context) == X.shape[1]:
        raise Misused(parameter, "name every column; leave at least one to model")
    conditions = (X[context], None if validation is None else validation[context])
    categories = categories_of(conditions[0], categorical, modelled)
    numeric = [name for name in names if name not in categories]
    if modelled and numeric:
        raise Refused(
            f"condition(s) {', '.join(repr(c) for c in numeric)} are numeric, but the mass P(k | c) of the "
            "categorical columns is counted per category of the conditions",
            "name them in {categorical_columns} too (their values become categories) or leave them out of "
            "{conditional_columns}",
        )
    rest = None if validation is None else validation.drop(columns=context)
    return X.drop(columns=context), rest, conditions, categories, modelled


def _fitted_context(
    train: pd.DataFrame | None, categories: dict[str, tuple[str, ...]], modelled: list[str]
) -> tuple[Conditions | None, CategoricalModel | None]:
    """(``conditions_``, ``categorical_``) from the training rows' context columns ``train`` (None: neither): the
    conditions' encoding, and the modelled categorical columns' counts within the conditions' categories."""
    if train is None:
        return None, None
    fitted = fit_conditions(train, categories)
    given = tuple(c for c in fitted.columns if c.name not in modelled)
    columns = tuple(c for c in fitted.columns if c.name in modelled)
    categorical = CategoricalModel.fit(train, columns, given) if columns else None
    return (Conditions(given) if given else None), categorical


def _validated_rows(
    estimator: FunnelDensity, X, validation, recipe: Recipe, limit: int, context_features: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(the rows of ``X``, the rows of ``validation`` or None) in the modelled columns, checked as scikit-learn
    checks them; constant columns are refused or left out, and so is a model over ``limit`` parameters (counted
    from ``recipe``, conditioned on ``context_features`` encoded columns, before anything is built)."""
    frame = drop_constant(estimator, validate(estimator, X, reset=True))
    estimator.columns_ = [str(c) for c in frame.columns]
    if len(estimator.columns_) > MAX_COLUMNS:
        raise Refused(
            f"the table has {len(estimator.columns_):,} columns; a model takes at most {MAX_COLUMNS:,}",
            "choose columns with {columns}",
        )
    _check_image_shape(recipe, len(estimator.columns_))
    check_size(recipe, len(estimator.columns_), limit, context_features)
    return frame, None if validation is None else select(estimator, validation)


def _check_image_shape(recipe: Recipe, columns: int) -> None:
    """Refuse an ``image_shape`` whose pixel count H * W * C is not the number of modelled columns (or one more, for
    the funnel family, which takes an image less its last value)."""
    shape = getattr(recipe.model, "image_shape", None)
    if not shape:
        return
    pixels = int(np.prod(shape))
    if not holds(pixels, columns, recipe.has_funnel):
        missing = pixels - columns == 1
        raise BadValue(
            "image_shape",
            list(shape),
            f"is {pixels:,} pixels, but X has {columns:,} modelled columns; give the shape of the rows' images"
            + (
                " (one column short, as BSDS300's 63 columns are 8x8 patches less their last pixel: the funnel "
                "family f-nsf-image takes such images, recipe f-image, its first squeeze dropping the missing pixel)"
                if missing
                else ""
            ),
        )


def _prepared(
    estimator: FunnelDensity,
    frame: pd.DataFrame,
    held_out: pd.DataFrame | None,
    recipe: Recipe,
    dtypes: dict[str, str],
    conditions: tuple[pd.DataFrame, pd.DataFrame | None] | None = None,
) -> PreparedRows:
    """:func:`~funnelcli.preparation.prepare_rows` with ``estimator``'s settings, keeping the modelled columns'
    dtypes and the dequantized columns; ``conditions``: the condition columns of ``X`` and of the validation rows
    (or None), split with the rows."""
    rows = prepare_rows(
        frame,
        held_out,
        seed=recipe.training.seed,
        val_fraction=estimator.val_fraction,
        dequantize=estimator.dequantize,
        dtypes=dtypes,
        conditions=conditions[0] if conditions else None,
        held_out_conditions=conditions[1] if conditions else None,
        bits=estimator.bits,
    )
    estimator.dtypes_ = rows.dtypes
    estimator.dequantized_columns_ = list(rows.dequantized_columns)
    return rows


def _train(estimator: FunnelDensity, rows: PreparedRows, recipe: Recipe, **options) -> None:
    """Train ``model_`` on ``rows`` with ``recipe``'s settings and keep the summary; ``options`` are
    :func:`funnelcli.training.fit`'s. After :class:`TrainingDiverged` the model keeps its best weights."""
    counts = {"n_train": len(rows.train), "n_validation": len(rows.held_out)}
    train, held_out = (_tensor(frame, torch.device("cpu")) for frame in (rows.train, rows.held_out))
    mask = rows.mask
    if _width(estimator):
        # Each row carries its encoded context beside it ([x, c]), so that every batch, shard and streamed copy
        # the loop makes keeps them together; the context gets no dequantization noise. A mixed model's mass
        # P(k | c) is counted, not trained: the loop fits p(x | k, c), whose one-hot k is part of the context.
        train = torch.cat([train, _as_tensor(_context(estimator, rows.train_conditions))], dim=1)
        held_out = torch.cat([held_out, _as_tensor(_context(estimator, rows.held_out_conditions))], dim=1)
        mask = np.concatenate([mask, np.zeros(_width(estimator), dtype=bool)])
    try:
        # Where training runs (the device, a torchrun process group, rows on the device or streamed) is decided
        # there, from the rows in host memory.
        summary = fit_rows(
            estimator.model_,
            train,
            held_out,
            recipe.training,
            device=estimator.device,
            dequantize=mask,
            **options,
        )
    except TrainingDiverged as error:
        # The model holds the best weights so far: keep them fitted, so that nothing is lost.
        if error.summary is not None:
            _set_summary(estimator, error.summary, **counts)
        raise
    _set_summary(estimator, summary, **counts)


def _set_summary(estimator: FunnelDensity, summary: TrainingSummary, *, n_train: int, n_validation: int) -> None:
    estimator.history_ = summary.history
    estimator.summary_ = {**summary.to_dict(), "train_rows": n_train, "validation_rows": n_validation}
    estimator.latent_dim_ = estimator.model_.latent_dim


def _fit_choice(
    estimator: FunnelDensity, X, validation, candidates: list[Recipe], *, checkpoint_dir, resume: bool, **options
) -> FunnelDensity:
    """Fit each of ``candidates`` (resolved recipes) to the same rows and keep the one with the best validation
    log-likelihood; ``choice_`` records them all.

    They train in turn into the same checkpoint files. A resumed run finds which candidate its checkpoint
    belongs to (by its training settings), trains the ones before it again without checkpoints (the same
    result, bit for bit, as before the interruption), resumes that one, and trains the rest."""
    interrupted = _checkpointed_candidate(checkpoint_dir, candidates) if resume else 0
    fitted, scores, diverged = [], [], None
    said, callback = _CandidateMessages(), options.pop("callback", None)
    for index, candidate in enumerate(candidates):
        twin = copy.copy(estimator)
        twin.recipe, twin.small_rows, twin.choose_rows = candidate, 0, 0
        said.candidate = candidate.name
        try:
            with said:
                twin.fit(
                    X,
                    validation=validation,
                    checkpoint_dir=None if index < interrupted else checkpoint_dir,
                    resume=resume and index == interrupted,
                    callback=None if callback is None else _naming(callback, candidate.name),
                    **options,
                )
        except TrainingDiverged as error:
            # A candidate that diverged competes with the best weights it reached, if it reached any.
            diverged = error
            if error.summary is None or error.summary.best_step == 0:
                continue
        fitted.append((candidate, twin))
        scores.append(float(twin.summary_["best_val_log_prob"]))
    if not fitted:
        raise diverged
    best = int(np.argmax(scores))
    estimator.__dict__.update({k: v for k, v in fitted[best][1].__dict__.items() if k.endswith("_")})
    estimator.choice_ = {
        "chosen": fitted[best][0].name,
        "candidates": [
            {"recipe": candidate.name, "val_log_prob": score, "best_step": twin.summary_["best_step"]}
            | ({"resumed_at_step": resumed} if (resumed := twin.summary_.get("resumed_at_step")) is not None else {})
            for (candidate, twin), score in zip(fitted, scores, strict=True)
        ],
    }
    return estimator


def _naming(callback: Callable[[dict], None], recipe: str) -> Callable[[dict], None]:
    """``callback`` with each training record naming the candidate it comes from (``recipe``)."""
    return lambda record: callback({**record, "recipe": recipe})


class _CandidateMessages(logging.Filter):
    """While candidates train: what training says is about one candidate, so it names it ("nsf-slow: no trained
    weights beat ..."); what the table makes every candidate say alike (a dequantized column) is said once."""

    def __init__(self):
        super().__init__()
        self.candidate, self.said = "", set()

    def filter(self, record: logging.LogRecord) -> bool:
        if Path(record.pathname).parent.name == "training":
            record.msg, record.args = f"{self.candidate}: {record.getMessage()}", None
        message = record.getMessage()
        if message in self.said:
            return False
        self.said.add(message)
        return True

    def __enter__(self):
        log.addFilter(self)

    def __exit__(self, *exc_info):
        log.removeFilter(self)


def _checkpointed_candidate(checkpoint_dir, candidates: list[Recipe]) -> int:
    """The index of the candidate whose training settings the latest checkpoint in ``checkpoint_dir`` records
    (0 when none matches: resuming the first then refuses the checkpoint with its usual message)."""
    from funnelcli.training.checkpoint import latest_made_with

    if checkpoint_dir is None:
        return 0
    found = (i for i, candidate in enumerate(candidates) if latest_made_with(Path(checkpoint_dir), candidate.training))
    return next(found, 0)


def _fit_auto(estimator: FunnelDensity, X, validation, recipe: Recipe) -> FunnelDensity:
    """``latent_dim="auto"``: sweep the default ladder of sizes and keep the chosen level's model.

    The level keeps the sweep's Gaussian ansatz: training the chosen size again with the recipe's own (flow)
    ansatz scored no better on breast cancer (benchmarks/RESULTS.md, "The funnel first") for one more run."""
    from funnelcli.sweep import latent_ladder, run_sweep, with_sweep_defaults

    if recipe.has_funnel:
        recipe = with_sweep_defaults(recipe, estimator.ansatz)  # a start given to the estimator is in recipe
    frame = drop_constant(estimator, validate(estimator, X, reset=True))
    estimator.dtypes_ = modelled_dtypes(input_dtypes(X), frame.columns)
    held_out = None if validation is None else select(estimator, validation)
    train, held_out = split_rows(frame, held_out, estimator.val_fraction, recipe.training.seed)
    options = {
        "device": estimator.device,
        "dequantize": estimator.dequantize,
        "max_parameters": estimator.max_parameters,
    }
    result = run_sweep(
        train,
        held_out,
        recipe=recipe,
        sizes=latent_ladder(train.shape[1]),
        options=options,
        full=False,
        keep_estimators=True,
    )
    chosen = result.estimators[result.chosen_latent_dim]
    # The chosen level was fitted on the selected columns; this estimator keeps its own view of the input.
    for name, value in vars(chosen).items():
        if name.endswith("_") and not name.startswith("_") and name not in _OWN_VIEW:
            setattr(estimator, name, value)
    estimator.sweep_ = result.table()
    estimator.sweep_rule_ = result.rule
    return estimator


# -- scoring and sampling ------------------------------------------------------------------------------------


def _scores(estimator: FunnelDensity, X, iw_samples: int | None, row_offset: int) -> np.ndarray:
    """``score_samples``: the rows' scores, with seeded dequantization noise (advanced past ``row_offset`` rows)
    and, for a VAE with ``iw_samples``, the importance-weighted bound in chunks of about 8192 / K rows."""
    frame = _pixels(estimator, select(estimator, X))
    context = _context(estimator, X)
    mask = _dequantize_mask(estimator)
    if mask.any():
        generator = np.random.default_rng(SCORE_NOISE_SEED)
        generator.bit_generator.advance(row_offset * frame.shape[1])  # one draw per value of earlier rows
        frame = frame + mask * generator.random(frame.shape)
    if iw_samples is not None and not estimator.is_bound_:
        raise Misused(["iw_samples"], "applies to VAE models only; this model's scores are exact")
    if iw_samples is not None and not whole(iw_samples, 1, MAX_IW_SAMPLES):
        raise OutOfRange("iw_samples", iw_samples, f"a whole number in 1..{MAX_IW_SAMPLES:,}")
    model = estimator.model_
    function, rows = model.log_prob, _BATCH
    if iw_samples is not None:
        iw_samples = int(iw_samples)
        function = lambda x, c=None: model.iw_log_prob(x, iw_samples, c)  # noqa: E731
        rows = max(1, _BATCH // iw_samples)  # K samples of each row are held at once
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(SCORE_NOISE_SEED)
        scores = _batched(model, frame, function, rows=rows, context=context)[:, 0]
    if estimator.categorical_ is not None:
        scores = scores + estimator.categorical_.log_prob(X)  # the mass of k, beside the density of x given k
    return scores


def _drawn(
    estimator: FunnelDensity,
    n_samples: int,
    temperature: float,
    random_state: int | None,
    context: np.ndarray | None = None,
    given: np.ndarray | None = None,
) -> tuple[np.ndarray, pd.DataFrame | None]:
    """``sample``: (``n_samples`` rows drawn 8192 at a time, seeded by ``random_state`` when given, leaving the
    global RNG as it was, dequantized columns rounded down; a mixed model's categorical columns drawn first, or
    None). With ``context`` (n_samples, C) row i is drawn given c_i; a mixed model draws k_i ~ P(k | c_i), ``given``
    (n_samples, G) the conditions' category indices, and then x_i given [c_i, k_i]."""
    model = estimator.model_
    categorical = estimator.categorical_
    device = next(model.parameters()).device
    chunks, picks = [], []
    with _seeded(model, random_state), torch.no_grad():
        model.eval()
        for start in range(0, n_samples, _BATCH):
            count = min(_BATCH, n_samples - start)
            parts = [] if context is None else [context[start : start + count]]
            if categorical is not None:
                # The categories' uniforms come from torch's CPU generator, so random_state seeds them too.
                uniforms = torch.rand(count, len(categorical.columns), dtype=torch.float64).numpy()
                picks.append(categorical.draw(uniforms, None if given is None else given[start : start + count]))
                parts.append(categorical.one_hot(picks[-1]))
            if not parts:
                drawn = model.sample(count, temperature)
            else:
                drawn = model.sample(count, temperature, _as_tensor(np.concatenate(parts, axis=1), device))
            chunks.append(drawn.double().cpu().numpy())
    rows = _rounded(estimator, np.concatenate(chunks))
    return rows, None if categorical is None else categorical.frame(np.concatenate(picks))


def _latent_codes(estimator: FunnelDensity, Z) -> np.ndarray:
    """``Z`` as a finite float64 array of shape (n, latent_dim_), or a :class:`UserError` that says what is wrong."""
    names = [str(name) for name in estimator.get_feature_names_out()]
    width = len(names)
    if isinstance(Z, pd.DataFrame):
        # The columns `transform` (set_output) and `funnel encode` write are taken by name; others by position.
        Z = Z[names] if set(names) <= {str(c) for c in Z.columns} else Z
        text = [str(c) for c, t in Z.dtypes.items() if not (is_numeric_dtype(t) or is_bool_dtype(t))]
        if text:
            raise UserError(f"Z's column(s) {', '.join(text)} are not numeric; Z must hold latent codes")
    try:
        codes = np.asarray(Z, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"Z must be numbers of shape (n, {width}), got {shown(Z)}") from None
    if codes.ndim != 2 or codes.shape[1] != width or len(codes) == 0:
        raise UserError(
            f"Z has shape {codes.shape}; this model's latent codes have shape (n, {width}), n >= 1 "
            f"(latent_dim_ = {width}, as transform returns them)"
        )
    bad = ~np.isfinite(codes) | (np.abs(codes) >= np.finfo(np.float32).max)
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        raise UserError(
            f"Z holds {int(bad.sum()):,} value(s) that are not finite float32 numbers, first {names[column]} of "
            f"row {row + 1}: {codes[row, column]:g}"
        )
    return codes


def _decoded(
    estimator: FunnelDensity, codes: np.ndarray, mean: bool, random_state: int | None, context: np.ndarray | None
) -> np.ndarray:
    """``inverse_transform``: ``codes`` decoded 8192 rows at a time (seeded by ``random_state`` when given,
    leaving the global RNG as it was), dequantized columns rounded down; given ``context`` for a conditional
    model."""
    model = estimator.model_
    with _seeded(model, random_state):
        rows = _batched(
            model, pd.DataFrame(codes), lambda z, c=None: decode(model, z, mean=mean, context=c), context=context
        )
    return _rounded(estimator, rows)


@contextlib.contextmanager
def _seeded(model: torch.nn.Module, random_state: int | None) -> Iterator[None]:
    """Draws seeded by ``random_state`` on a fork of torch's RNG, leaving the global one as it was; with None,
    draws from the global RNG, which advances, so that two unseeded calls differ."""
    if random_state is None:
        yield
        return
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(random_state)
        yield


def _as_fitted(estimator: FunnelDensity, rows: np.ndarray, index=None) -> np.ndarray | pd.DataFrame:
    """``rows`` in the modelled columns: a DataFrame when the estimator was fitted on one, else the array."""
    if not hasattr(estimator, "feature_names_in_"):
        return rows
    return pd.DataFrame(rows, columns=list(estimator.columns_), index=index)


def _check_input_features(estimator: FunnelDensity, input_features) -> None:
    """Refuse ``input_features`` that are not the fitted columns, as scikit-learn's transformers do."""
    given = [str(name) for name in np.asarray(input_features, dtype=object).ravel()]
    if len(given) != estimator.n_features_in_:
        raise UserError(
            f"input_features should have length equal to the number of features ({estimator.n_features_in_}), "
            f"got {len(given)}"
        )
    if hasattr(estimator, "feature_names_in_") and given != estimator.input_columns_:
        raise UserError(
            "input_features is not equal to feature_names_in_ (" + ", ".join(estimator.input_columns_) + ")"
        )


def _batched(
    model: torch.nn.Module,
    frame: pd.DataFrame,
    function: Callable[..., torch.Tensor],
    *,
    rows: int = _BATCH,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """``function`` of ``frame``'s rows, ``rows`` at a time on ``model``'s device in eval mode, as float64 of
    shape (n_rows, -1); with ``context`` (n_rows, C), ``function(rows, their context)``."""
    device = next(model.parameters()).device
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(frame), rows):
            batch = _tensor(frame.iloc[start : start + rows], device)
            if context is None:
                result = function(batch)
            else:
                result = function(batch, _as_tensor(context[start : start + rows], device))
            outputs.append(result.reshape(batch.shape[0], -1).double().cpu().numpy())
    return np.concatenate(outputs)


def _check_fitted(estimator: FunnelDensity) -> None:
    if not hasattr(estimator, "model_"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError("this FunnelDensity is not fitted yet; call fit or load first")


def _rounded(estimator: FunnelDensity, rows: np.ndarray) -> np.ndarray:
    """Drawn or decoded ``rows`` with their dequantized columns rounded down; a pixel model's clipped to its
    pixel range [0, 2^bits - 1] too (a flow's support is all of R^D, the pixels' is not)."""
    mask = _dequantize_mask(estimator)
    rows[:, mask] = np.floor(rows[:, mask])
    if getattr(estimator, "bits", None) is not None:
        rows = np.clip(rows, 0, 2**estimator.bits - 1)
    return rows


def _pixels(estimator: FunnelDensity, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as a pixel model reads it (checked, and reduced from ``source_bits``); as it is for any other."""
    if getattr(estimator, "bits", None) is None:
        return frame
    return pixel_values(frame, estimator.bits, estimator.source_bits)


def _dequantize_mask(estimator: FunnelDensity) -> np.ndarray:
    return np.isin(estimator.columns_, estimator.dequantized_columns_)


def _width(estimator: FunnelDensity) -> int:
    """C, the width of the flow's context: the encoded conditions, then a mixed model's one-hot categorical
    columns (0 for an unconditional model)."""
    parts = (estimator.conditions_, estimator.categorical_)
    return sum(part.width for part in parts if part is not None)


def _context(estimator: FunnelDensity, X) -> np.ndarray | None:
    """The flow's context of the rows of ``X`` (N, C): the encoded conditions, then a mixed model's one-hot
    categorical columns (a :class:`UserError` when ``X`` lacks them); None for an unconditional model."""
    parts = [part.encode(X) for part in (estimator.conditions_, estimator.categorical_) if part is not None]
    return np.concatenate(parts, axis=1) if parts else None


def _given_context(estimator: FunnelDensity, conditions, rows: int) -> np.ndarray | None:
    """The flow's context of ``conditions`` (a row for each of ``rows``), which a conditional or mixed model needs
    and an unconditional one refuses."""
    names = estimator.context_columns_
    if not names:
        if conditions is not None:
            raise Misused(["conditions"], "applies to conditional models only; this model has no conditions")
        return None
    if conditions is None:
        raise Refused(
            f"this model is conditional on {', '.join(names)}",
            "pass {conditions} (a DataFrame holding those columns, a row for each code)",
        )
    if len(conditions) != rows:
        raise UserError(f"conditions has {len(conditions)} rows for {rows} codes; give one row per code")
    return _context(estimator, conditions)


def _as_tensor(values: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    return torch.tensor(np.asarray(values, dtype=np.float32), device=device)


def _tensor(frame: pd.DataFrame, device: torch.device) -> torch.Tensor:
    # A copy: pandas may hand out a read-only view, which torch must not alias.
    return torch.tensor(frame.to_numpy(dtype=np.float32), device=device)
