"""``FunnelDensity``: the library's front door, a scikit-learn-style density estimator.

The CLI is a thin skin over this class: ``funnel train`` is ``fit`` then ``save``, ``funnel score`` is
``load`` then ``score_samples``, and so on, so both give the same numbers.
"""

from __future__ import annotations

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

from funnelcli import __version__, artifact
from funnelcli.data import split_validation
from funnelcli.errors import UserError
from funnelcli.models import Recipe, build_model, load_recipe
from funnelcli.training import TrainingSummary, fit, resolve_device

_BATCH = 8192


class FunnelDensity:
    """Exact density estimation with a (funnel) normalizing flow.

    Parameters
    ----------
    recipe : str or Recipe, default "f-nsf"
        A bundled recipe name (``funnel recipes``), a path to a TOML recipe, or a :class:`Recipe`.
    reduce, ansatz, steps, batch_size, lr, seed : optional
        Override the recipe's fields of the same names. ``reduce`` and ``ansatz`` need a funnel family.
    device : {"auto", "cpu", "cuda"}, default "auto"
        Where to train and evaluate; ``auto`` takes a GPU when torch sees one.
    val_fraction : float, default 0.1
        Share of the rows held out for validation (early stopping) when ``fit`` gets no ``validation``.

    Attributes (after ``fit`` or ``load``)
    ----------
    model_ : FunnelFlow
    recipe_ : Recipe
    feature_names_in_ : list of str
    n_features_in_ : int
    latent_dim_ : int
    summary_ : dict, the training summary
    """

    def __init__(
        self,
        recipe: str | Path | Recipe = "f-nsf",
        *,
        reduce: float | None = None,
        ansatz: str | None = None,
        steps: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        seed: int | None = None,
        device: str = "auto",
        val_fraction: float = 0.1,
    ):
        self.recipe = recipe
        self.reduce = reduce
        self.ansatz = ansatz
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.device = device
        self.val_fraction = val_fraction

    # -- scikit-learn conventions ---------------------------------------------------------------------------
    _PARAMS = ("recipe", "reduce", "ansatz", "steps", "batch_size", "lr", "seed", "device", "val_fraction")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params: Any) -> FunnelDensity:
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(f"unknown parameter {name!r}; known: {', '.join(self._PARAMS)}")
            setattr(self, name, value)
        return self

    def resolved_recipe(self) -> Recipe:
        """The recipe with this estimator's overrides applied (validated)."""
        recipe = self.recipe if isinstance(self.recipe, Recipe) else load_recipe(self.recipe)
        return recipe.with_overrides(
            reduce=self.reduce,
            ansatz=self.ansatz,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
        )

    # -- fitting ---------------------------------------------------------------------------------------------
    def fit(
        self,
        X,
        y=None,
        validation=None,
        *,
        callback: Callable[[dict], None] | None = None,
    ) -> FunnelDensity:
        """Fit by maximum likelihood; keep the weights with the best validation log-likelihood.

        ``X``: DataFrame (its numeric columns, by name) or array (N, D). ``validation``: rows held out for
        early stopping, else a seeded ``val_fraction`` of ``X``. ``callback`` receives progress dicts.
        """
        recipe = self.resolved_recipe()
        frame = _as_frame(X)
        self.feature_names_in_ = [str(c) for c in frame.columns]
        self.dtypes_ = {str(c): str(t) for c, t in frame.dtypes.items()}
        frame = frame.astype(np.float64)
        if validation is None:
            train, held_out = split_validation(frame, self.val_fraction, recipe.training.seed)
        else:
            train, held_out = frame, self._select(validation)
        std = train.std(ddof=0).to_numpy()
        constant = [name for name, s in zip(self.feature_names_in_, std, strict=True) if not s > 0]
        if constant:
            raise UserError(
                f"column(s) {', '.join(repr(c) for c in constant)} are constant in the training rows and have no "
                "density; leave them out with --columns"
            )
        mean = train.mean().to_numpy()
        self.n_features_in_ = len(self.feature_names_in_)
        self.recipe_ = recipe
        self.model_ = build_model(recipe, mean, std)
        device = resolve_device(self.device)
        self.model_.to(device)
        summary = fit(
            self.model_,
            _tensor(train, device),
            _tensor(held_out, device),
            recipe.training,
            callback=callback,
        )
        self._set_summary(summary, n_train=len(train), n_validation=len(held_out))
        return self

    def _set_summary(self, summary: TrainingSummary, *, n_train: int, n_validation: int) -> None:
        self.history_ = summary.history
        self.summary_ = {**summary.to_dict(), "train_rows": n_train, "validation_rows": n_validation}
        self.latent_dim_ = self.model_.latent_dim

    # -- using a fitted model ---------------------------------------------------------------------------------
    def score_samples(self, X) -> np.ndarray:
        """Exact log p(x) per row, in nats, in the units of the data. Shape (N,)."""
        return self._batched(X, self.model_.log_prob)[:, 0]

    def score(self, X, y=None) -> float:
        """Mean log-likelihood per row (higher is better), so model selection can maximise it."""
        return float(np.mean(self.score_samples(X)))

    def transform(self, X) -> np.ndarray:
        """The latent code z = T(x), shape (N, latent_dim_)."""
        return self._batched(X, self.model_.encode)

    def sample(self, n_samples: int = 1, random_state: int | None = None, temperature: float = 1.0) -> np.ndarray:
        """``n_samples`` rows in the data's units, shape (n, D). ``temperature`` scales the base's std."""
        self._check_fitted()
        if n_samples < 1:
            raise UserError(f"the number of samples must be at least 1, got {n_samples}")
        if not temperature > 0:
            raise UserError(f"temperature must be positive, got {temperature}")
        device = next(self.model_.parameters()).device
        chunks = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            if random_state is not None:
                torch.manual_seed(random_state)
            self.model_.eval()
            for start in range(0, n_samples, _BATCH):
                count = min(_BATCH, n_samples - start)
                chunks.append(self.model_.sample(count, temperature).double().cpu().numpy())
        return np.concatenate(chunks)

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model folder (``model.safetensors``, ``model.json``, ``metrics.jsonl``)."""
        self._check_fitted()
        std = self.model_.transform._transforms[0].std.double().cpu().numpy()
        mean = self.model_.transform._transforms[0].mean.double().cpu().numpy()
        metadata = {
            "recipe_name": self.recipe_.name,
            "recipe": self.recipe_.to_dict(),
            "columns": self.feature_names_in_,
            "dtypes": self.dtypes_,
            "input_dim": self.n_features_in_,
            "latent_dim": self.latent_dim_,
            "scaler": {"mean": mean.tolist(), "std": std.tolist()},
            "parameters": count_parameters(self.model_),
            "training": self.summary_,
            "versions": {
                "funnelcli": __version__,
                "torch": torch.__version__,
                "nflows": metadata_version("nflows"),
                "python": platform.python_version(),
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        return artifact.write_folder(path, self.model_.state_dict(), metadata, self.history_, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto") -> FunnelDensity:
        """Load a model folder written by :meth:`save` or ``funnel train``. Reads JSON and safetensors only."""
        tensors, metadata = artifact.read_folder(path)
        try:
            recipe = Recipe.from_dict(metadata["recipe"], name=metadata.get("recipe_name", "custom"))
            mean = np.asarray(metadata["scaler"]["mean"], dtype=np.float64)
            std = np.asarray(metadata["scaler"]["std"], dtype=np.float64)
            columns = [str(c) for c in metadata["columns"]]
        except (KeyError, TypeError) as error:
            raise UserError(f"{path}: model.json lacks {error}; the model folder is damaged, retrain it") from None
        model = build_model(recipe, mean, std)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError:
            raise UserError(
                f"{path}: the weights do not fit the recipe in model.json (another model's files?); retrain it"
            ) from None
        estimator = cls(recipe=recipe, device=device)
        estimator.recipe_ = recipe
        estimator.model_ = model.to(resolve_device(device)).eval()
        estimator.feature_names_in_ = columns
        estimator.dtypes_ = metadata.get("dtypes", {})
        estimator.n_features_in_ = len(columns)
        estimator.latent_dim_ = model.latent_dim
        estimator.summary_ = metadata.get("training", {})
        estimator.history_ = artifact.read_metrics(path)
        estimator.metadata_ = metadata
        return estimator

    # -- helpers -----------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this FunnelDensity is not fitted yet; call fit or load first")

    def _select(self, X) -> pd.DataFrame:
        """The training columns of ``X`` in training order (by name for a DataFrame), as float64."""
        self._check_fitted()
        return _as_frame(X, columns=self.feature_names_in_).astype(np.float64)

    def _batched(self, X, function: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        frame = self._select(X)
        device = next(self.model_.parameters()).device
        self.model_.eval()
        outputs = []
        with torch.no_grad():
            for start in range(0, len(frame), _BATCH):
                batch = _tensor(frame.iloc[start : start + _BATCH], device)
                result = function(batch)
                outputs.append(result.reshape(batch.shape[0], -1).double().cpu().numpy())
        if not outputs:
            return np.zeros((0, 1))
        return np.concatenate(outputs)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _as_frame(X, columns: list[str] | None = None) -> pd.DataFrame:
    """``X`` as a DataFrame of finite numbers; with ``columns``, those columns by name (or position for arrays)."""
    if isinstance(X, pd.DataFrame):
        frame = X
        if columns is not None:
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise UserError(
                    f"the data lack the model's column(s) {', '.join(repr(c) for c in missing)}; "
                    "the model was trained on " + ", ".join(columns)
                )
            frame = frame[columns]
    else:
        array = np.asarray(X)
        if array.ndim != 2:
            raise UserError(f"expected a 2-D table of shape (rows, columns), got shape {array.shape}")
        if columns is not None and array.shape[1] != len(columns):
            raise UserError(f"expected {len(columns)} columns, got {array.shape[1]}")
        frame = pd.DataFrame(array, columns=columns or [f"x{j}" for j in range(array.shape[1])])
    if len(frame) == 0:
        raise UserError("the table has no rows")
    non_numeric = [str(c) for c, t in frame.dtypes.items() if not (is_numeric_dtype(t) or is_bool_dtype(t))]
    if non_numeric:
        raise UserError(f"column(s) {', '.join(non_numeric)} are not numeric; leave them out")
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    finite = np.isfinite(values)
    if not finite.all():
        bad = [str(c) for c, ok in zip(frame.columns, finite.all(axis=0), strict=True) if not ok]
        raise UserError(f"column(s) {', '.join(bad)} hold NaN or infinite values; drop or impute those rows")
    return frame


def _tensor(frame: pd.DataFrame, device: torch.device) -> torch.Tensor:
    # A copy: pandas may hand out a read-only view, which torch must not alias.
    return torch.tensor(frame.to_numpy(dtype=np.float32), device=device)
