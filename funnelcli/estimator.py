"""``FunnelDensity``: the library's front door, a scikit-learn estimator for exact densities.

The CLI is a thin skin over this class: ``funnel train`` is ``fit`` then ``save``, ``funnel score`` is
``load`` then ``score_samples``, and so on, so both give the same numbers.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version as metadata_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import validate_data

from funnelcli import artifact, distributed
from funnelcli._version import __version__
from funnelcli.data.columns import constant_columns
from funnelcli.errors import ConstantColumns, Misused, OutOfRange, Refused, UnknownChoice, UserError
from funnelcli.model_metadata import ModelMetadata
from funnelcli.models import Recipe, build_model, load_recipe
from funnelcli.models.contract import DensityModel, count_parameters
from funnelcli.models.families import DEFAULT_MAX_PARAMETERS, MAX_PARAMETERS_LIMIT, check_size, estimate_size
from funnelcli.models.recipe import MAX_COLUMNS, MAX_SEED, _shown, field_names
from funnelcli.preparation import DEQUANTIZE, PreparedRows, input_dtypes, modelled_dtypes, prepare_rows, split_rows
from funnelcli.training import MAX_NONFINITE_IN_A_ROW, TrainingDiverged, TrainingSummary, fit, resolve_device
from funnelcli.training.rows import fits_on_device, place_rows

log = logging.getLogger("funnelcli")

_BATCH = 8192
#: The most importance samples per row ``score_samples(iw_samples=K)`` takes. Rows are scored in chunks of
#: about 8192 / K, so that a chunk holds no more samples than a chunk of plain scoring does.
MAX_IW_SAMPLES = 10_000
#: The most rows one ``sample`` call draws (drawn 8192 at a time; the result is one float64 array).
MAX_SAMPLES = 10_000_000
#: The highest sampling temperature: beyond it, draws lie far outside anything the model was fitted to.
MAX_TEMPERATURE = 10.0
#: What an auto-fitted estimator keeps of its own rather than taking from the chosen level's estimator.
_OWN_VIEW = ("n_features_in_", "feature_names_in_", "dropped_constant_columns_", "dtypes_")
#: ``latent_dim=AUTO`` chooses the latent size by a sweep in ``fit``.
AUTO = "auto"
_NAMED_PARAMS = ("reduce", "latent_dim", "ansatz", "steps", "batch_size", "lr", "seed")
#: Seed of the dequantization noise used when scoring, so that a score is reproducible.
SCORE_NOISE_SEED = 0


class FunnelDensity(TransformerMixin, BaseEstimator):
    """Exact density estimation with a (funnel) normalizing flow.

    Parameters
    ----------
    recipe : str, path or Recipe, default "f-nsf"
        A bundled recipe name (``funnel recipes``), a path to a TOML recipe, or a :class:`Recipe`.
    reduce, latent_dim, ansatz, steps, batch_size, lr, seed : optional
        Override the recipe's fields of the same names. ``reduce`` (the fraction of dimensions to remove),
        ``latent_dim`` (the number to keep, 1 to D - 1; not together with ``reduce``) and ``ansatz`` need a
        funnel family or the VAE. ``latent_dim="auto"`` chooses the size in ``fit`` by a sweep
        (:mod:`funnelcli.sweep`): one model per size of the default ladder, all on the same validation rows, with
        a Gaussian ansatz unless ``ansatz`` says otherwise; the smallest size within one standard error of the
        best is kept, and ``sweep_`` holds the table.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where to train and evaluate; ``auto`` takes a GPU when torch sees one.
    val_fraction : float, default 0.1
        Share of the rows held out for validation (early stopping) when ``fit`` gets no ``validation``.
    dequantize : {"uniform", "none"}, default "uniform"
        What to do with integer-valued columns. ``uniform`` adds noise u ~ U[0, 1) to them, so the model is a
        density of the dequantized data; its log-likelihood lower-bounds the log-probability of the integers
        (E_u log p(x + u) <= log P(x)). ``none`` fits them as they are, which lets the likelihood run off to
        infinity on the integer values.
    drop_constant : bool, default False
        Leave out constant columns (which have no density) instead of refusing them.
    max_parameters : int, default 100_000_000
        ``fit`` refuses, before building it, a model with more parameters than this (counted from the recipe
        and the number of columns). Raise it for a larger model; ``None`` means the default.
    **overrides
        Any other recipe field by name (``flow_steps=6``, ``hidden_features=64``, ``dropout=0.1``...).

    Attributes (after ``fit`` or ``load``)
    ----------
    model_ : DensityModel, a FunnelFlow or the VAE (:mod:`funnelcli.models.contract`)
    recipe_ : Recipe, with every override applied
    columns_ : list of str, the modelled columns (``x0, x1, ...`` for arrays)
    feature_names_in_ : array of str, only when fitted on a DataFrame
    n_features_in_ : int
    latent_dim_ : int
    dequantized_columns_ : list of str
    dropped_constant_columns_ : list of str
    summary_ : dict, the training summary; history_ : list of dict, the validation curve
    is_bound_ : bool, True for the VAE, whose scores are lower bounds on log p(x)
    sweep_ : DataFrame, only with ``latent_dim="auto"``: a row per size tried and per baseline (validation
    log-likelihood, standard error, parameters...); ``sweep_rule_`` states the choice

    Examples
    --------
    >>> model = FunnelDensity("small-f-nsf", reduce=0.5, steps=200).fit(train)   # doctest: +SKIP
    >>> model.score_samples(test)        # exact log p(x) per row, nats           # doctest: +SKIP
    >>> model.transform(test)            # latent code, (N, latent_dim_)          # doctest: +SKIP
    >>> model.sample(100, random_state=0)                                          # doctest: +SKIP
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
        # Checked at fit, as scikit-learn asks: __init__ only stores what it is given.
        for name, value in overrides.items():
            setattr(self, name, value)

    # -- scikit-learn parameters -----------------------------------------------------------------------------
    def _override_names(self) -> list[str]:
        """The keyword arguments beyond the named ones (public, non-fitted attributes set by the caller)."""
        named = set(self._get_param_names())
        return [k for k in vars(self) if k not in named and not k.startswith("_") and not k.endswith("_")]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=deep)
        params.update({name: getattr(self, name) for name in self._override_names()})
        return params

    def set_params(self, **params: Any) -> FunnelDensity:
        named = set(self._get_param_names())
        for name in [name for name in params if name not in named]:
            setattr(self, name, params.pop(name))
        super().set_params(**params)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags

    def resolved_recipe(self) -> Recipe:
        """The recipe with this estimator's overrides applied (validated; ``max_parameters`` too)."""
        self._parameter_limit()
        recipe = self.recipe if isinstance(self.recipe, Recipe) else load_recipe(self.recipe)
        unknown = [name for name in self._override_names() if name not in field_names()]
        if unknown:
            raise UserError(
                f"FunnelDensity got unknown parameter(s) {', '.join(unknown)}; recipe fields are: "
                + ", ".join(field_names())
            )
        overrides = {name: getattr(self, name) for name in (*_NAMED_PARAMS, *self._override_names())}
        if overrides.get("latent_dim") == AUTO:
            if self.reduce is not None:
                raise UserError("reduce and latent_dim='auto' both set the latent size; pass one of them")
            # The sweep sets each level's size; the recipe without one must still be a funnel (or the VAE).
            overrides["latent_dim"] = None
            recipe = recipe.with_overrides(**overrides)
            if not recipe.has_funnel and recipe.family != "vae":
                raise UserError(
                    f"latent_dim='auto' needs a funnel recipe or the VAE; {recipe.name!r} is {recipe.family}"
                )
            return recipe
        return recipe.with_overrides(**overrides)

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
            validation log-likelihoods).
        checkpoint_dir : path, optional
            Where to keep ``latest.safetensors`` (the whole training state) and ``best.safetensors``. With it,
            SIGINT and SIGTERM stop training after the current step, write both checkpoints and raise
            :class:`~funnelcli.training.TrainingInterrupted`.
        resume : bool, default False
            Continue from ``checkpoint_dir``'s latest checkpoint (same data, settings and device): the result is
            the one an uninterrupted run gives, to the bit.
        checkpoint_every : int, default 0
            Also write the checkpoints every this many steps (0: only when interrupted).
        max_nonfinite : int, default 20
            Steps with a non-finite loss or gradient (skipped) in a row after which training stops with
            :class:`~funnelcli.training.TrainingDiverged`; the estimator then holds the best weights so far.
        compile : bool, default False
            Compile the training step with :func:`torch.compile`: a start-up cost (about a minute on a CPU) for
            faster steps on long runs. The weights it gives differ from an uncompiled run's by float rounding.

        Notes
        -----
        Started by ``torchrun --nproc_per_node=N`` (or in a process group the caller initialised), each process
        trains on every N-th row with ``batch_size // N`` rows a step and DistributedDataParallel averages the
        gradients; every rank ends with the same weights. Give every rank the same ``X``, call :meth:`save`
        on rank 0 only (``torch.distributed.get_rank() == 0``), and :func:`funnelcli.distributed.leave` at the
        end on every rank.
        """
        recipe, limit = self._checked_settings(X)
        if self.latent_dim == AUTO:
            return self._fit_auto(X, validation, recipe)
        frame, held_out = self._validated_rows(X, validation, recipe, limit)
        rows = self._prepared(frame, held_out, recipe, input_dtypes(X))
        self.recipe_, self.model_ = recipe, build_model(recipe, rows.mean, rows.std)
        options = {"callback": callback, "checkpoint_dir": checkpoint_dir, "resume": resume, "compile": compile}
        self._train(rows, recipe, checkpoint_every=checkpoint_every, max_nonfinite=max_nonfinite, **options)
        return self

    def _checked_settings(self, X) -> tuple[Recipe, int]:
        """(the resolved recipe, the parameter limit), once the settings and the number of rows are checked."""
        try:
            rows = len(X)
        except TypeError:  # a sparse matrix or a scalar: scikit-learn's checks say what is wrong
            rows = None
        if rows is not None and rows < 2:
            raise Refused(
                f"the table has {rows} row(s) (n_samples = {rows}); fitting a density needs at least 3 rows "
                "(2 to train on and 1 to validate on)",
                "or 2 with {validation=FILE}",
            )
        if self.dequantize not in DEQUANTIZE:
            raise UnknownChoice("dequantize", self.dequantize, DEQUANTIZE)
        limit = self._parameter_limit()
        return self.resolved_recipe(), limit

    def _validated_rows(self, X, validation, recipe: Recipe, limit: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """(the rows of ``X``, the rows of ``validation`` or None) in the modelled columns, checked as
        scikit-learn checks them; constant columns are refused or left out, and so is a model over ``limit``
        parameters (counted from ``recipe`` before anything is built)."""
        frame = self._drop_constant(self._validate(X, reset=True))
        self.columns_ = [str(c) for c in frame.columns]
        if len(self.columns_) > MAX_COLUMNS:
            raise Refused(
                f"the table has {len(self.columns_):,} columns; a model takes at most {MAX_COLUMNS:,}",
                "choose columns with {columns}",
            )
        check_size(recipe, len(self.columns_), limit)
        return frame, None if validation is None else self._select(validation)

    def _prepared(
        self, frame: pd.DataFrame, held_out: pd.DataFrame | None, recipe: Recipe, dtypes: dict[str, str]
    ) -> PreparedRows:
        """:func:`~funnelcli.preparation.prepare_rows` with this estimator's settings, keeping the modelled
        columns' dtypes and the dequantized columns."""
        rows = prepare_rows(
            frame,
            held_out,
            seed=recipe.training.seed,
            val_fraction=self.val_fraction,
            dequantize=self.dequantize,
            dtypes=dtypes,
        )
        self.dtypes_ = rows.dtypes
        self.dequantized_columns_ = list(rows.dequantized_columns)
        return rows

    def _train(self, rows: PreparedRows, recipe: Recipe, **options: Any) -> None:
        """Train ``model_`` on ``rows`` with ``recipe``'s settings and keep the summary; ``options`` are
        :func:`funnelcli.training.fit`'s. After :class:`TrainingDiverged` the model keeps its best weights."""
        # Under torchrun, each process joins the group here and trains on its share of the rows.
        device, _ = distributed.join(resolve_device(self.device))
        self.model_.to(device)
        train, held_out, on_device = _placed(rows, device)
        counts = {"n_train": len(rows.train), "n_validation": len(rows.held_out)}
        try:
            summary = fit(
                self.model_,
                train,
                held_out,
                recipe.training,
                dequantize=torch.as_tensor(rows.mask, device=device) if rows.mask.any() else None,
                stream_rows=not on_device,
                **options,
            )
        except TrainingDiverged as error:
            # The model holds the best weights so far: keep them fitted, so that nothing is lost.
            if error.summary is not None:
                self._set_summary(error.summary, **counts)
            raise
        self._set_summary(summary, **counts)

    def _fit_auto(self, X, validation, recipe: Recipe) -> FunnelDensity:
        """``latent_dim="auto"``: sweep the default ladder of sizes and keep the chosen level's model."""
        from funnelcli.sweep import DEFAULT_ANSATZ, latent_ladder, run_sweep

        if self.ansatz is None and recipe.has_funnel:
            recipe = recipe.with_overrides(ansatz=DEFAULT_ANSATZ)
        frame = self._drop_constant(self._validate(X, reset=True))
        self.dtypes_ = modelled_dtypes(input_dtypes(X), frame.columns)
        held_out = None if validation is None else self._select(validation)
        train, held_out = split_rows(frame, held_out, self.val_fraction, recipe.training.seed)
        options = {"device": self.device, "dequantize": self.dequantize, "max_parameters": self.max_parameters}
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
                setattr(self, name, value)
        self.sweep_ = result.table()
        self.sweep_rule_ = result.rule
        return self

    def _parameter_limit(self) -> int:
        limit = DEFAULT_MAX_PARAMETERS if self.max_parameters is None else self.max_parameters
        if not _whole(limit, 1, MAX_PARAMETERS_LIMIT):
            raise OutOfRange("max_parameters", limit, f"a whole number in 1..{MAX_PARAMETERS_LIMIT:,}")
        return int(limit)

    def _drop_constant(self, frame: pd.DataFrame) -> pd.DataFrame:
        constant = constant_columns(frame)
        self.dropped_constant_columns_ = constant if self.drop_constant else []
        if not constant:
            return frame
        names = ", ".join(repr(c) for c in constant)
        if not self.drop_constant:
            raise ConstantColumns(constant)
        if len(constant) == frame.shape[1]:
            raise UserError("every column is constant; there is nothing to model")
        log.warning("leaving out constant column(s) %s: the model is a density of the other columns", names)
        return frame.drop(columns=constant)

    def _set_summary(self, summary: TrainingSummary, *, n_train: int, n_validation: int) -> None:
        self.history_ = summary.history
        self.summary_ = {**summary.to_dict(), "train_rows": n_train, "validation_rows": n_validation}
        self.latent_dim_ = self.model_.latent_dim

    # -- using a fitted model ---------------------------------------------------------------------------------
    @property
    def is_bound_(self) -> bool:
        """Whether scores are lower bounds on log p(x) (the VAE) rather than exact log-likelihoods."""
        self._check_fitted()
        return bool(self.model_.is_bound)

    def score_samples(self, X, *, iw_samples: int | None = None, row_offset: int = 0) -> np.ndarray:
        """Exact log p(x) per row, in nats, in the units of the data, shape (n_samples,).

        For dequantized (integer) columns this is log p(x + u) with u ~ U[0, 1) drawn with a fixed seed: an
        unbiased estimate of E_u log p(x + u), which lower-bounds the log-probability of the integers.

        For a VAE (``is_bound_``) it is a lower bound: the one-sample ELBO, or with ``iw_samples=K`` the
        importance-weighted bound with K samples, tighter as K grows; its noise has a fixed seed.

        ``row_offset``: the number of rows that precede ``X`` in a file scored chunk by chunk, so that the
        dequantization noise of each row is the same however the file is chunked.
        """
        self._check_fitted()
        frame = self._select(X)
        mask = self._dequantize_mask()
        if mask.any():
            generator = np.random.default_rng(SCORE_NOISE_SEED)
            generator.bit_generator.advance(row_offset * frame.shape[1])  # one draw per value of earlier rows
            frame = frame + mask * generator.random(frame.shape)
        if iw_samples is not None and not self.is_bound_:
            raise Misused(["iw_samples"], "applies to VAE models only; this model's scores are exact")
        if iw_samples is not None and not _whole(iw_samples, 1, MAX_IW_SAMPLES):
            raise OutOfRange("iw_samples", iw_samples, f"a whole number in 1..{MAX_IW_SAMPLES:,}")
        function, rows = self.model_.log_prob, _BATCH
        if iw_samples is not None:
            iw_samples = int(iw_samples)
            function = lambda x: self.model_.iw_log_prob(x, iw_samples)  # noqa: E731
            rows = max(1, _BATCH // iw_samples)  # K samples of each row are held at once
        device = next(self.model_.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(SCORE_NOISE_SEED)
            return self._batched(frame, function, rows=rows)[:, 0]

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per row (higher is better), so model selection can maximise it."""
        return float(np.mean(self.score_samples(X)))

    def transform(self, X) -> np.ndarray:
        """The latent code z = T(x), shape (n_samples, latent_dim_). Dequantized columns enter at x + 0.5."""
        self._check_fitted()
        frame = self._select(X)
        return self._batched(frame + 0.5 * self._dequantize_mask(), self.model_.encode)

    def sample(self, n_samples: int = 1, random_state: int | None = None, temperature: float = 1.0) -> np.ndarray:
        """``n_samples`` rows in the data's units, shape (n_samples, n_columns).

        ``temperature`` scales the base distribution's standard deviation. Dequantized columns are rounded
        down, back to integers. ``n_samples`` is 1 to 10,000,000, ``temperature`` in (0, 10] and
        ``random_state`` None or 0 to 2**32 - 1.
        """
        self._check_fitted()
        check_sampling(n_samples, temperature, random_state)
        n_samples, temperature = int(n_samples), float(temperature)
        device = next(self.model_.parameters()).device
        chunks = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            if random_state is not None:
                torch.manual_seed(random_state)
            self.model_.eval()
            for start in range(0, n_samples, _BATCH):
                count = min(_BATCH, n_samples - start)
                chunks.append(self.model_.sample(count, temperature).double().cpu().numpy())
        rows = np.concatenate(chunks)
        mask = self._dequantize_mask()
        rows[:, mask] = np.floor(rows[:, mask])
        return rows

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model folder (``model.safetensors``, ``model.json``, ``metrics.jsonl``)."""
        self._check_fitted()
        scaler = self.model_.scaler
        metadata = ModelMetadata(
            recipe_name=self.recipe_.name,
            recipe=self.recipe_.to_dict(),
            columns=tuple(self.columns_),
            input_columns=tuple(self.input_columns_),
            fitted_on_names=hasattr(self, "feature_names_in_"),
            dtypes=self.dtypes_,
            input_dim=len(self.columns_),
            latent_dim=self.latent_dim_,
            dequantize=self.dequantize,
            dequantized_columns=tuple(self.dequantized_columns_),
            dropped_constant_columns=tuple(self.dropped_constant_columns_),
            mean=tuple(scaler.mean.double().tolist()),
            std=tuple(scaler.std.double().tolist()),
            parameters=count_parameters(self.model_),
            max_parameters=self._parameter_limit(),
            training=self.summary_,
            versions={
                "funnelcli": __version__,
                "torch": torch.__version__,
                "nflows": metadata_version("nflows"),
                "python": platform.python_version(),
            },
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        return artifact.write_folder(path, self.model_.state_dict(), metadata, self.history_, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto", max_parameters: int | None = None) -> FunnelDensity:
        """Load a model folder written by :meth:`save` or ``funnel train``. Reads JSON and safetensors only.

        Every field of ``model.json`` is checked for type and range, and against the record the weights carry of
        it, before anything is built; the model's size is then counted from its recipe and must not exceed
        ``max_parameters`` (default: the limit it was trained under, recorded in ``model.json``).
        """
        tensors, document = artifact.read_folder(path)
        metadata = ModelMetadata.from_dict(document)
        recipe = Recipe.from_dict(metadata.recipe, name=metadata.recipe_name)
        model = _rebuilt(path, recipe, metadata, tensors, max_parameters)
        estimator = cls(
            recipe=recipe, device=device, dequantize=metadata.dequantize, max_parameters=metadata.max_parameters
        )
        estimator.recipe_ = recipe
        estimator.model_ = model.to(resolve_device(device)).eval()
        estimator.columns_ = list(metadata.columns)
        if metadata.fitted_on_names:
            estimator.feature_names_in_ = np.asarray(metadata.input_columns, dtype=object)
        estimator.dtypes_ = metadata.dtypes
        estimator.dequantized_columns_ = list(metadata.dequantized_columns)
        estimator.dropped_constant_columns_ = list(metadata.dropped_constant_columns)
        estimator.n_features_in_ = len(metadata.input_columns)
        estimator.latent_dim_ = model.latent_dim
        estimator.summary_ = metadata.training
        estimator.history_ = _read_history(path)
        estimator.metadata_ = document
        return estimator

    # -- helpers -----------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this FunnelDensity is not fitted yet; call fit or load first")

    @property
    def input_columns_(self) -> list[str]:
        """The columns ``fit`` was given, in order (``x0, x1, ...`` for arrays): what scoring reads. This
        includes constant columns left out with ``drop_constant``, which ``columns_`` (the modelled ones) lacks."""
        self._check_fitted()
        if hasattr(self, "feature_names_in_"):
            return [str(c) for c in self.feature_names_in_]
        return [f"x{j}" for j in range(self.n_features_in_)]

    def _dequantize_mask(self) -> np.ndarray:
        return np.isin(self.columns_, self.dequantized_columns_)

    def _validate(self, X, *, reset: bool) -> pd.DataFrame:
        """Check ``X`` as scikit-learn does (shape, dtype, finiteness, feature count and names) and return it as
        a float64 DataFrame with its column names (``x0, x1, ...`` for arrays)."""
        if isinstance(X, pd.DataFrame):
            non_numeric = [str(c) for c, t in X.dtypes.items() if not (is_numeric_dtype(t) or is_bool_dtype(t))]
            if non_numeric:
                raise UserError(f"column(s) {', '.join(non_numeric)} are not numeric; leave them out")
        values = validate_data(self, X, reset=reset, dtype=np.float64, ensure_min_samples=2 if reset else 1)
        if isinstance(X, pd.DataFrame) and hasattr(self, "feature_names_in_"):
            columns = [str(c) for c in X.columns]
        else:
            columns = [f"x{j}" for j in range(values.shape[1])]
        return pd.DataFrame(values, columns=columns)

    def _select(self, X) -> pd.DataFrame:
        """The modelled columns of ``X`` in training order, as float64.

        A DataFrame's columns are matched by name (their order and any extra columns do not matter); an
        array's by position.
        """
        if isinstance(X, pd.DataFrame) and hasattr(self, "feature_names_in_"):
            wanted = [str(c) for c in self.feature_names_in_]
            missing = [c for c in wanted if c not in X.columns]
            if missing:
                raise UserError(
                    f"the data lack the model's column(s) {', '.join(repr(c) for c in missing)}; "
                    "the model was trained on " + ", ".join(wanted)
                )
            X = X[wanted]
        elif isinstance(X, pd.DataFrame):
            # Fitted on an array: columns go by position; the ones named x0, x1, ... (as written by the CLI and
            # by `sample`) are taken by name first.
            X = (X[self.input_columns_] if set(self.input_columns_) <= set(X.columns) else X).to_numpy()
        frame = self._validate(X, reset=False)
        if self.dropped_constant_columns_:
            frame = frame.drop(columns=self.dropped_constant_columns_)
        beyond = np.abs(frame.to_numpy()) >= np.finfo(np.float32).max
        if beyond.any():
            column = int(np.argmax(beyond.any(axis=0)))
            row = int(np.argmax(beyond[:, column]))
            raise UserError(
                f"column {frame.columns[column]!r} holds a value beyond float32's range (3.4e38), in which the model "
                f"computes (first at row {row + 1}: {frame.iat[row, column]:g}); drop or rescale such rows"
            )
        return frame

    def _batched(
        self, frame: pd.DataFrame, function: Callable[[torch.Tensor], torch.Tensor], *, rows: int = _BATCH
    ) -> np.ndarray:
        device = next(self.model_.parameters()).device
        self.model_.eval()
        outputs = []
        with torch.no_grad():
            for start in range(0, len(frame), rows):
                batch = _tensor(frame.iloc[start : start + rows], device)
                result = function(batch)
                outputs.append(result.reshape(batch.shape[0], -1).double().cpu().numpy())
        return np.concatenate(outputs)


def check_sampling(n_samples: Any, temperature: Any = 1.0, random_state: Any = None) -> None:
    """Refuse (:class:`UserError`) a number of rows, temperature or seed that ``sample`` does not take:
    ``n_samples`` in 1..10,000,000, ``temperature`` in (0, 10], ``random_state`` None or in 0..2**32 - 1."""
    if not _whole(n_samples, 1, MAX_SAMPLES):
        raise UserError(
            f"the number of samples (-n) must be a whole number in 1..{MAX_SAMPLES:,}, got {_shown(n_samples)}"
        )
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float | np.integer | np.floating)
        or not 0 < temperature <= MAX_TEMPERATURE
    ):
        raise OutOfRange("temperature", temperature, f"a number in (0, {MAX_TEMPERATURE:g}]")
    if random_state is not None and not _whole(random_state, 0, MAX_SEED):
        raise OutOfRange("random_state", random_state, f"a whole number in 0..{MAX_SEED}")


def _whole(value: Any, low: int, high: int) -> bool:
    """Whether ``value`` is an integer (not a bool) in [low, high]."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_) and low <= value <= high


def _placed(rows: PreparedRows, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(training rows, validation rows, whether they are on ``device``): both on ``device`` when they fit there
    together, else both in host memory, each batch copied over as training needs it."""
    tensors = _tensor(rows.train, torch.device("cpu")), _tensor(rows.held_out, torch.device("cpu"))
    n_bytes = sum(t.nbytes for t in tensors)
    on_device = fits_on_device(n_bytes, device)
    if not on_device:
        log.warning(
            "the %.2f GB of training and validation rows do not fit in %s's free memory: each batch is copied "
            "from pinned host memory instead",
            n_bytes / 1e9,
            device,
        )
    train, held_out = (place_rows(t, device, on_device=on_device) for t in tensors)
    return train, held_out, on_device


def _rebuilt(
    path: str | Path, recipe: Recipe, metadata: ModelMetadata, tensors: dict[str, torch.Tensor], limit: int | None
) -> DensityModel:
    """The model of a folder's ``recipe`` holding its weights ``tensors``, on the CPU; refused when its size
    exceeds ``limit`` (default: the folder's ``max_parameters``) or the weights do not fit the recipe."""
    limit = metadata.max_parameters if limit is None else limit
    if not _whole(limit, 1, MAX_PARAMETERS_LIMIT):
        raise UserError(f"max_parameters must be a whole number in 1..{MAX_PARAMETERS_LIMIT:,}, got {limit!r}")
    estimate = estimate_size(recipe, len(metadata.columns))
    if estimate.parameters > limit:
        raise UserError(
            f"{path}: its recipe gives a model of {estimate.parameters:,} parameters, above the limit of "
            f"{limit:,}; raise it with FunnelDensity.load(..., max_parameters=N)"
        )
    mismatch = f"{path}: the weights do not fit the recipe in model.json (another model's files?); retrain it"
    # Every number in the file, buffers too: fewer than the recipe's parameters cannot be its weights.
    numbers = sum(tensor.numel() for tensor in tensors.values())
    if (estimate.parameters, estimate.latent_dim) != (metadata.parameters, metadata.latent_dim) or (
        estimate.parameters > numbers
    ):
        raise UserError(mismatch)
    mean, std = (np.asarray(values, dtype=np.float64) for values in (metadata.mean, metadata.std))
    model = build_model(recipe, mean, std)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError:
        raise UserError(mismatch) from None
    return model


def _read_history(path: str | Path) -> list[dict]:
    """A model folder's validation curve, ``metrics.jsonl``: one JSON record per line."""
    try:
        history = artifact.read_metrics(path)
    except UserError:
        raise
    except (RecursionError, ValueError):  # nested too deeply, or an integer too long to read
        history = None
    if not isinstance(history, list) or not all(isinstance(record, dict) for record in history):
        raise UserError(
            f"{path}: metrics.jsonl is not one JSON record per line; the model folder is damaged, retrain it"
        )
    return history


def _tensor(frame: pd.DataFrame, device: torch.device) -> torch.Tensor:
    # A copy: pandas may hand out a read-only view, which torch must not alias.
    return torch.tensor(frame.to_numpy(dtype=np.float32), device=device)
