"""Recipes: every architecture and training setting of a model, in one TOML file.

A recipe file has a ``family`` and a ``description`` at the top and two tables, ``[model]`` and
``[training]``; a field left out takes the default below. Bundled recipes live in ``recipes/`` at the top of
the project (``funnel recipes`` lists them); any other path is read as a user's recipe.

How the latent size is set: ``model.latent_dim = K`` keeps K of the D inputs (1 <= K <= D - 1), and
``model.drop = M`` drops M of them (the authors' code drops 4). Without either, ``reduce`` does: a funnel on D
inputs drops ``round(reduce * D)`` coordinates (halves round up), at least 1 and at most D - 1, so the latent
size is ``latent_dim = D - dropped``. For example reduce = 0.5 keeps 3 of 6 columns and 3 of 7. A recipe sets
one of the three, never two.

Several funnels: ``model.funnels = [{level = 2, reduce = 0.25}, {level = 5, latent_dim = 2}]`` (f-nsf and
f-glow) puts a funnel at each listed flow step, each sized by one of ``reduce``, ``latent_dim`` or ``drop``
relative to the dimensions that reach it. It replaces ``funnel_level``, ``reduce``, ``latent_dim`` and ``drop``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from funnelcli.errors import BadValue, Misused, OutOfRange, Refused, UserError, shown
from funnelcli.models.image_plan import image_latent_dim, image_plan

# The families are declared in the registry; FAMILIES and FAMILY_FIELDS are re-exported for their readers here.
from funnelcli.models.registry import FAMILIES as FAMILIES
from funnelcli.models.registry import FAMILY_FIELDS as FAMILY_FIELDS
from funnelcli.models.registry import FUNNEL_FIELDS

#: The fields that size one funnel; a recipe (or an entry of ``model.funnels``) sets at most one of them.
SIZE_FIELDS = ("reduce", "latent_dim", "drop")
MLP_LAYERS = ("preserve", "halfway", "latent")


#: The most columns a model may have (a recipe's ``input_dim``, ``funnel recipes show --dim``, a table to fit).
MAX_COLUMNS = 100_000
#: The largest seed: seeds are unsigned 32-bit integers, which every random number generator used accepts.
MAX_SEED = 2**32 - 1


def _int(low: int, high: int):
    """A check for an integer in [low, high]; ``check.range`` states the range."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return "an integer"
        if value < low:
            return f"an integer >= {low}"
        if value > high:
            return f"an integer <= {high}"
        return None

    check.range = f"{low}..{high}"
    return check


def _float(low: float, high: float, *, low_open: bool = False, high_open: bool = True):
    """A check for a finite number between ``low`` and ``high`` (open or closed ends); ``check.range`` states it."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    shown = f"{left}{low:g}, {high:g}{right}"

    def check(value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "a number"
        # An integer is compared as it is: float() of a huge one would overflow.
        if isinstance(value, float) and not math.isfinite(value):
            return "a finite number"
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high:
            return f"a number in {shown}"
        return None

    check.range = shown
    return check


def _choice(*options: str):
    def check(value):
        return None if isinstance(value, str) and value in options else "one of " + ", ".join(repr(o) for o in options)

    check.range = " | ".join(options)
    return check


def _recipe_name(value):
    """A check for the name of a bundled recipe ('' for none): a small-table recipe is never a user's file."""
    if value == "" or (isinstance(value, str) and value in bundled_recipes()):
        return None
    return "the name of a bundled recipe (`funnel recipes` lists them), or ''"


_recipe_name.range = "a bundled recipe name, or ''"


def _recipe_names(value):
    """A check for a list of bundled recipe names (none repeated)."""
    if (
        isinstance(value, list | tuple)
        and len(set(value)) == len(value)
        and all(v and not _recipe_name(v) for v in value)
    ):
        return None
    return "a list of bundled recipe names (`funnel recipes` lists them), each once"


_recipe_names.range = "[] | [NAME, ...]"


def _bool(value):
    return None if isinstance(value, bool) else "true or false"


_bool.range = "true | false"

#: The most funnels a recipe may list in ``model.funnels``.
MAX_FUNNELS = 100


_FUNNEL_SIZE_CHECKS = {"reduce": _float(0, 1, low_open=True), "latent_dim": _int(1, MAX_COLUMNS)}
_FUNNEL_SIZE_CHECKS["drop"] = _FUNNEL_SIZE_CHECKS["latent_dim"]


def _funnels(value):
    expected = (
        "a list of tables {level = L, and one of reduce = r, latent_dim = K or drop = M}, levels increasing "
        f"(at most {MAX_FUNNELS})"
    )
    if not isinstance(value, list | tuple) or len(value) > MAX_FUNNELS:
        return expected
    previous = -1
    for entry in value:
        if not isinstance(entry, dict) or set(entry) - {"level", *SIZE_FIELDS} or "level" not in entry:
            return expected
        if len(set(entry) & set(SIZE_FIELDS)) != 1 or _int(0, 999)(entry["level"]) or entry["level"] <= previous:
            return expected
        previous = entry["level"]
        if any(_FUNNEL_SIZE_CHECKS[key](entry[key]) for key in SIZE_FIELDS if key in entry):
            return expected
    return None


_funnels.range = "[{level, reduce | latent_dim | drop}, ...]"

#: The most layers an F-MLP layout may list.
MAX_MLP_LAYERS = 1000


def _layout(value):
    if (
        not isinstance(value, list | tuple)
        or not value
        or any(not isinstance(v, str) or v not in MLP_LAYERS for v in value)
    ):
        return "a non-empty list of " + ", ".join(repr(o) for o in MLP_LAYERS)
    if len(value) > MAX_MLP_LAYERS:
        return f"a list of at most {MAX_MLP_LAYERS} layers"
    if "latent" not in value:
        return "a list of layers that includes one 'latent' layer"
    return None


_layout.range = f"1..{MAX_MLP_LAYERS} of " + " | ".join(MLP_LAYERS)


def _image_shape(value):
    """An empty list, [H, W] or [H, W, C] of positive integers whose product is at most MAX_COLUMNS."""
    expected = f"[] or [H, W] or [H, W, C], positive integers whose product is at most {MAX_COLUMNS}"
    if not isinstance(value, list | tuple) or len(value) not in (0, 2, 3):
        return expected
    if any(_int(1, MAX_COLUMNS)(v) for v in value) or math.prod(value) > MAX_COLUMNS:
        return expected
    return None


_image_shape.range = "[] | [H, W] | [H, W, C]"


def _spec(default, check, doc: str):
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class ModelSettings:
    """The ``[model]`` table."""

    flow_steps: int = _spec(10, _int(1, 1000), "flow steps (permutation, LU linear map, spline layer)")
    transform: str = _spec("coupling", _choice("coupling", "autoregressive"), "spline layer type")
    hidden_features: int = _spec(128, _int(1, 65536), "hidden units of each spline network")
    residual_blocks: int = _spec(2, _int(1, 64), "residual blocks of each spline network")
    bins: int = _spec(8, _int(2, 256), "rational-quadratic spline bins")
    tail_bound: float = _spec(
        3.0, _float(0, 1000, low_open=True, high_open=False), "splines act on [-tail_bound, tail_bound]"
    )
    dropout: float = _spec(0.0, _float(0, 1), "dropout probability in the spline networks")
    reduce: float = _spec(0.5, _float(0, 1, low_open=True), "fraction of the dimensions a funnel removes")
    latent_dim: int = _spec(0, _int(0, MAX_COLUMNS), "dimensions a funnel keeps (0: set by reduce or drop)")
    drop: int = _spec(0, _int(0, MAX_COLUMNS), "dimensions a funnel drops (0: set by reduce or latent_dim)")
    funnel_level: int = _spec(2, _int(0, 999), "0-based flow step replaced by the funnel")
    ansatz: str = _spec("flow", _choice("gaussian", "flow"), "q(x_drop | z): gaussian or flow")
    ansatz_hidden_features: int = _spec(64, _int(1, 65536), "hidden units of the ansatz networks")
    ansatz_layers: int = _spec(3, _int(1, 64), "hidden layers of the gaussian ansatz MLP")
    ansatz_flow_steps: int = _spec(2, _int(1, 1000), "layers of the flow ansatz")
    ansatz_layer: str = _spec(
        "spline", _choice("spline", "affine"), "flow ansatz layers: RQ-spline or affine (Glow) couplings"
    )
    ansatz_lu: bool = _spec(False, _bool, "flow ansatz: an LU linear map after each layer's permutation")
    ansatz_spline: bool = _spec(
        False, _bool, "an unconditional elementwise spline on the dropped coordinates, before the ansatz"
    )
    funnels: tuple = _spec((), _funnels, "several funnels: [{level, reduce | latent_dim | drop}, ...]")
    funnel_kind: str = _spec(
        "spline", _choice("spline", "conv", "conv-stride1"), "f-nsf funnel: spline, or a 1-D convolutional funnel"
    )
    mlp_layout: tuple = _spec(
        ("preserve", "preserve", "halfway", "preserve", "latent", "preserve", "preserve", "preserve"),
        _layout,
        "f-mlp layers: preserve, halfway (to halfway between input and latent size) or latent",
    )
    vae_layers: int = _spec(2, _int(1, 64), "hidden layers of the VAE encoder and decoder")
    base: str = _spec(
        "normal",
        _choice("normal", "mixture"),
        "latent distribution: the standard normal, or a Gaussian mixture of base_components (for clustered tables)",
    )
    base_components: int = _spec(8, _int(1, 256), "components of the mixture base")
    image_shape: tuple = _spec(
        (),
        _image_shape,
        "image families: [H, W] or [H, W, C] of the pixels the columns are, row-major (empty: a square grey image;"
        " f-nsf-image also takes an image less its last value)",
    )
    levels: int = _spec(2, _int(1, 16), "image families: levels of the multi-scale flow (each halves H and W)")


@dataclass(frozen=True)
class TrainingSettings:
    """The ``[training]`` table."""

    batch_size: int = _spec(256, _int(1, 2**20), "rows per step")
    lr: float = _spec(5e-4, _float(0, 10, low_open=True, high_open=False), "Adam learning rate")
    steps: int = _spec(2000, _int(1, 100_000_000), "optimisation steps")
    schedule: str = _spec("cosine", _choice("cosine", "constant"), "learning-rate schedule (cosine anneals to 0)")
    grad_clip: float = _spec(5.0, _float(0, 1e6, high_open=False), "gradient-norm clipping (0: none)")
    eval_every: int = _spec(100, _int(1, 100_000_000), "steps between validation passes")
    patience: int = _spec(10, _int(0, 1_000_000), "validation passes without improvement before stopping (0: never)")
    seed: int = _spec(0, _int(0, MAX_SEED), "seed of weights, permutations, batches and the validation split")
    start: str = _spec(
        "random",
        _choice("random", "gaussian", "principal", "surface"),
        "initial weights: random; gaussian (spline flows start as the training rows' full-covariance Gaussian); "
        "principal (random, but each funnel starts keeping the top principal components of the rows reaching it); "
        "or surface (as principal, but each funnel keeps the directions over which those rows are most nearly a "
        "function graph, searched from the principal ones)",
    )
    fallback: str = _spec(
        "gaussian",
        _choice("gaussian", "none"),
        "weights kept if no trained ones beat them on the validation rows: the training rows' full-covariance "
        "Gaussian (spline flows; with a mixture base, a Gaussian mixture), or none",
    )
    small_rows: int = _spec(
        0,
        _int(0, 10**12),
        "a table with fewer training rows than this (after the validation split) is trained with small_recipe "
        "instead (0: never)",
    )
    small_recipe: str = _spec("", _recipe_name, "the bundled recipe used below small_rows rows")
    choose_rows: int = _spec(
        0,
        _int(0, 10**12),
        "a table with fewer training rows than this (after the validation split) trains this recipe and each of "
        "choose_from, and keeps the one with the best validation log-likelihood (0: never)",
    )
    choose_from: tuple = _spec((), _recipe_names, "the bundled recipes that compete with this one below choose_rows")


_SECTIONS = {"model": ModelSettings, "training": TrainingSettings}
_OPTIONAL_DEFAULTS = {
    "base": "normal",
    "base_components": 8,
    "ansatz_layer": "spline",
    "ansatz_lu": False,
    "ansatz_spline": False,
    "start": "random",
    "fallback": "gaussian",
    "small_rows": 0,
    "small_recipe": "",
    "choose_rows": 0,
    "choose_from": (),
}
_TOP_LEVEL = ("family", "description", "input_dim")
_FIELD_SECTION = {f.name: name for name, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class Recipe:
    """A complete, validated recipe. Build one with :func:`load_recipe` or :meth:`Recipe.from_dict`."""

    family: str = "f-nsf"
    description: str = ""
    model: ModelSettings = field(default_factory=ModelSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    name: str = "custom"
    #: The number of columns the recipe was sized for (informational: `funnel recipes show` counts parameters).
    input_dim: int | None = None

    @property
    def has_funnel(self) -> bool:
        return FAMILIES[self.family].has_funnel

    @property
    def fields(self) -> tuple[str, ...]:
        """The ``[model]`` fields this recipe's family reads."""
        return FAMILIES[self.family].fields

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, name: str = "custom", source: str = "recipe") -> Recipe:
        """Validate a parsed recipe; every unknown key or bad value is a :class:`UserError` naming it."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: a recipe must be a table of settings, not {type(data).__name__}")
        data = dict(data)
        for key in data:
            if key not in _TOP_LEVEL and key not in _SECTIONS:
                _unknown(source, key, [*_TOP_LEVEL, *_SECTIONS])
        family = data.get("family", "f-nsf")
        if not isinstance(family, str) or family not in FAMILIES:
            raise UserError(f"{source}: family {shown(family)} is unknown; choose one of {', '.join(FAMILIES)}")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise UserError(f"{source}: description must be a string")
        input_dim = data.get("input_dim")
        if input_dim is not None and _int(1, MAX_COLUMNS)(input_dim) is not None:
            raise UserError(
                f"{source}: input_dim = {shown(input_dim)} is invalid; it must be an integer in 1..{MAX_COLUMNS}"
            )
        sections = {}
        for section, settings_cls in _SECTIONS.items():
            values = data.get(section, {})
            if not isinstance(values, dict):
                raise UserError(f"{source}: [{section}] must be a table of settings")
            sections[section] = _build_settings(settings_cls, values, source, section)
        recipe = cls(family=family, description=description, name=name, input_dim=input_dim, **sections)
        recipe._check_consistent(source, set(data.get("model", {})))
        return recipe

    def latent_size(self, input_dim: int) -> int:
        """The latent size this recipe's funnels (or VAE) give ``input_dim`` columns: ``latent_dim``, or what
        ``drop`` or ``reduce`` leaves (:func:`latent_dim`); with ``funnels``, what the last one keeps."""
        if FAMILIES[self.family].image:
            m = self.model
            _, plan = image_plan(m.image_shape, input_dim, self.family, m.levels, self.has_funnel, m.reduce)
            return image_latent_dim(plan)
        if self.model.funnels:
            return self.funnel_plan(input_dim)[-1][1]
        m = self.model
        return latent_dim(input_dim, m.reduce, m.latent_dim, m.drop)

    def funnel_plan(self, input_dim: int) -> list[tuple[int, int]]:
        """(flow step, dimensions kept) of each funnel of an f-nsf or f-glow model on ``input_dim`` columns."""
        if not self.model.funnels:
            return [(self.model.funnel_level, self.latent_size(input_dim))]
        plan, dim = [], input_dim
        for entry in self.model.funnels:
            level = entry["level"]
            size = next(f"{key} = {entry[key]}" for key in SIZE_FIELDS if key in entry)
            kept, dropped = entry.get("latent_dim", 0), entry.get("drop", 0)
            if dim < 2 or (kept and kept >= dim) or (dropped and dropped >= dim):
                raise UserError(
                    f"model.funnels: the funnel at level {level} ({size}) receives {dim} dimension(s) and must keep "
                    f"1 to {dim - 1} of them; make the funnels before it remove less, or this one more"
                )
            dim = latent_dim(dim, entry.get("reduce", 0.5), kept, dropped)
            plan.append((level, dim))
        return plan

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (what ``model.json`` stores); ``from_dict`` reads it back.

        Of ``reduce``, ``latent_dim`` and ``drop`` only the one that sets the latent size is written; with
        ``funnels``, none of them (nor ``funnel_level``).
        """
        model = {key: value for key, value in dataclasses.asdict(self.model).items() if key in self.fields}
        setting = "latent_dim" if self.model.latent_dim else "drop" if self.model.drop else "reduce"
        for key in SIZE_FIELDS:
            if key != setting or self.model.funnels:
                model.pop(key, None)
        if self.model.funnels:
            model.pop("funnel_level", None)
            model["funnels"] = [dict(entry) for entry in self.model.funnels]
        else:
            model.pop("funnels", None)
        # Fields added after model format 2 are written only when they differ from their default, so the
        # recipes of earlier model and sweep folders read back equal to what this version writes.
        for key, default in _OPTIONAL_DEFAULTS.items():
            if model.get(key, default) == default:
                model.pop(key, None)
        for key in ("mlp_layout", "image_shape"):
            if key in model:
                model[key] = list(model[key])
        data = {"family": self.family, "description": self.description}
        if self.input_dim is not None:
            data["input_dim"] = self.input_dim
        training = dataclasses.asdict(self.training)
        for key in ("start", "fallback", "small_rows", "small_recipe", "choose_rows", "choose_from"):
            if training[key] == _OPTIONAL_DEFAULTS[key]:
                del training[key]
        if "choose_from" in training:
            training["choose_from"] = list(training["choose_from"])
        return {**data, "model": model, "training": training}

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with fields replaced by name (``reduce=0.25``, ``steps=500``); ``None`` values are ignored.

        Setting a funnel field on a family without a funnel is a :class:`UserError`.
        """
        overrides = {key: value for key, value in overrides.items() if value is not None}
        if not overrides:
            return self
        if "latent_dim" in overrides and _int(1, MAX_COLUMNS)(overrides["latent_dim"]) is not None:
            raise OutOfRange("latent_dim", overrides["latent_dim"], "a whole number of dimensions, 1 or more")
        if "reduce" in overrides and "latent_dim" in overrides:
            raise Misused(
                ["reduce", "latent_dim"], "both set the latent size; pass one ({latent_dim=K} keeps K dimensions)"
            )
        sizing = [key for key in (*SIZE_FIELDS, "funnel_level") if key in overrides]
        if sizing and self.model.funnels:
            flags = ", ".join("--" + key.replace("_", "-") for key in sizing)
            raise UserError(
                f"recipe {self.name!r} has several funnels (model.funnels), each with its own size, so {flags} "
                "does not apply; edit the sizes in the recipe's funnels list"
            )
        for key in overrides:
            if key not in _FIELD_SECTION:
                _unknown("override", key, list(_FIELD_SECTION))
        given = [key for key in overrides if _FIELD_SECTION[key] == "model" and key not in self.fields]
        if given:
            flags = ", ".join("--" + key.replace("_", "-") for key in given)
            raise UserError(f"recipe {self.name!r} {self._does_not_use(given, flags)}")
        data = self.to_dict()
        for key, value in overrides.items():
            data[_FIELD_SECTION[key]][key] = value
        # The one given sets the latent size; the recipe's others give way
        for key in SIZE_FIELDS:
            if key in overrides:
                for other in SIZE_FIELDS:
                    if other != key:
                        data["model"].pop(other, None)
        return Recipe.from_dict(data, name=self.name, source=f"recipe {self.name!r}")

    def _does_not_use(self, keys: list[str], shown: str) -> str:
        """An error for fields (shown as ``shown``) that this recipe's family does not read."""
        if set(keys) <= set(FUNNEL_FIELDS) and not self.has_funnel:
            return f"(family {self.family}) has no funnel, so {shown} does not apply; use a funnel recipe such as f-nsf"
        return f"(family {self.family}) does not use {shown}; remove it"

    def small_table_recipe(self, rows: int, small_rows: int | None = None) -> Recipe | None:
        """The bundled recipe to train a table of ``rows`` rows with instead of this one (its ``small_recipe``,
        below ``small_rows`` rows: this recipe's own, unless given), or None to keep this one."""
        threshold = self.training.small_rows if small_rows is None else small_rows
        if not threshold or rows >= threshold or not self.training.small_recipe:
            return None
        return load_recipe(self.training.small_recipe)

    def choice_recipes(
        self, rows: int, choose_rows: int | None = None, choose_from: Sequence[str] | None = None
    ) -> list[Recipe]:
        """The bundled recipes that compete with this one on a table of ``rows`` training rows (its
        ``choose_from``, below ``choose_rows`` rows: this recipe's own, unless given); empty for none."""
        threshold = self.training.choose_rows if choose_rows is None else choose_rows
        if not threshold or rows >= threshold:
            return []
        return [load_recipe(name) for name in (self.training.choose_from if choose_from is None else choose_from)]

    def _check_consistent(self, source: str, model_keys: set[str]) -> None:
        if self.training.small_rows and not self.training.small_recipe:
            raise UserError(
                f"{source}: training.small_rows = {self.training.small_rows} needs training.small_recipe, the "
                "bundled recipe for smaller tables (or set small_rows = 0)"
            )
        if self.training.choose_rows and not self.training.choose_from:
            raise UserError(
                f"{source}: training.choose_rows = {self.training.choose_rows} needs training.choose_from, the "
                "bundled recipes to choose between (or set choose_rows = 0)"
            )
        given = sorted(model_keys - set(self.fields))
        if given:
            raise UserError(f"{source}: {self._does_not_use(given, 'model.' + given[0])}")
        m = self.model
        sizes = [key for key in SIZE_FIELDS if key in model_keys and (key == "reduce" or getattr(m, key))]
        if len(sizes) > 1:
            raise UserError(
                f"{source}: model.{sizes[0]} and model.{sizes[1]} both set the latent size; keep one of them"
            )
        fixed = next((key for key in ("latent_dim", "drop") if getattr(m, key)), None)
        if fixed and "funnel_kind" in self.fields and m.funnel_kind != "spline":
            raise UserError(
                f"{source}: the {m.funnel_kind} funnel keeps a size set by its stride, so {fixed} does "
                "not apply; leave it out, or use funnel_kind = 'spline'"
            )
        if m.funnels:
            clash = sorted(model_keys & {"funnel_level", *SIZE_FIELDS})
            if clash:
                raise UserError(
                    f"{source}: model.funnels gives every funnel's level and size, so model.{clash[0]} does not "
                    "apply; remove it"
                )
            if m.funnel_kind != "spline":
                raise UserError(f"{source}: model.funnels holds spline funnels; remove funnel_kind = {m.funnel_kind!r}")
            last = m.funnels[-1]["level"]
            if last >= m.flow_steps:
                raise UserError(
                    f"{source}: model.funnels puts a funnel at level {last}, which must be below flow_steps "
                    f"{m.flow_steps} (levels count from 0)"
                )
        elif "funnel_level" in self.fields and m.funnel_level >= m.flow_steps:
            raise UserError(
                f"{source}: funnel_level {m.funnel_level} must be below flow_steps {m.flow_steps} (levels count from 0)"
            )


def _unknown(source: str, key: str, known: list[str]) -> None:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    raise UserError(f"{source}: unknown key {shown(key)}{hint}")


def _build_settings(settings_cls, values: dict[str, Any], source: str, section: str):
    fields = {f.name: f for f in dataclasses.fields(settings_cls)}
    for key, value in values.items():
        if key not in fields:
            _unknown(f"{source} [{section}]", key, list(fields))
        expected = fields[key].metadata["check"](value)
        if expected is not None:
            raise UserError(f"{source}: {section}.{key} = {shown(value)} is invalid; it must be {expected}")
    # TOML and JSON may write a float field as an integer (lr = 1); store floats as floats.
    converted = {key: float(value) if fields[key].type == "float" else value for key, value in values.items()}
    for key in ("mlp_layout", "image_shape", "choose_from"):
        if key in converted:
            converted[key] = tuple(converted[key])
    if "funnels" in converted:
        converted["funnels"] = tuple(
            {key: float(value) if key == "reduce" else value for key, value in entry.items()}
            for entry in converted["funnels"]
        )
    return settings_cls(**converted)


def latent_dim(input_dim: int, reduce: float, kept: int = 0, dropped: int = 0) -> int:
    """The size a funnel leaves of ``input_dim`` coordinates: ``kept`` when it is not 0, else ``input_dim -
    dropped`` when that is not 0 (each must leave 1..D - 1), else D - clip(round_half_up(reduce D), 1, D - 1)."""
    if kept and input_dim >= 2 and not 1 <= kept <= input_dim - 1:
        raise BadValue(
            "latent_dim",
            kept,
            f"does not fit a table of {input_dim} columns: a funnel keeps 1 to {input_dim - 1} of them (it drops at "
            "least one)",
        )
    if dropped and input_dim >= 2 and not 1 <= dropped <= input_dim - 1:
        raise UserError(
            f"model.drop = {dropped} does not fit a table of {input_dim} columns: a funnel drops 1 to "
            f"{input_dim - 1} of them (it keeps at least one); use reduce or latent_dim for tables this small"
        )
    if input_dim < 2:
        raise Refused(
            f"a funnel needs at least 2 columns to remove one, got n_features = {input_dim}", "use {recipe=nsf}"
        )
    if kept:
        return kept
    if dropped:
        return input_dim - dropped
    dropped = min(input_dim - 1, max(1, math.floor(reduce * input_dim + 0.5)))
    return input_dim - dropped


# -- finding recipes ---------------------------------------------------------------------------------------


def bundled_recipe_dir() -> Path:
    """Where the bundled recipes are: inside the installed wheel, or ``recipes/`` of a source checkout."""
    packaged = resources.files("funnelcli") / "_recipes"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "recipes"


def bundled_recipes() -> dict[str, Path]:
    """Bundled recipe names (file stems) and their files, sorted by name."""
    directory = bundled_recipe_dir()
    return {path.stem: path for path in sorted(directory.glob("*.toml"))}


def recipe_path(name_or_path: str | Path) -> Path:
    """The file of a bundled recipe name, or of a user's recipe path."""
    text = str(name_or_path)
    bundled = bundled_recipes()
    if text in bundled:
        return bundled[text]
    path = Path(text)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserError(f"recipe file {text}: no such file")
        return path
    close = difflib.get_close_matches(text, list(bundled), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"unknown recipe {text!r}; {hint}`funnel recipes` lists the bundled ones, or pass a .toml path")


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Read and validate a bundled recipe (by name) or a user's TOML file (by path)."""
    path = recipe_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:  # not TOML, not UTF-8, or an integer with more digits than Python reads
        raise UserError(f"recipe {path}: not valid TOML ({(str(error).splitlines() or [''])[0][:120]})") from None
    except RecursionError:
        raise UserError(
            f"recipe {path}: its tables or arrays are nested too deeply to read; a recipe is two flat tables, "
            "[model] and [training]"
        ) from None
    name = path.stem if path.parent == bundled_recipe_dir() else str(path)
    return Recipe.from_dict(data, name=name, source=f"recipe {path.name}")


def field_names() -> tuple[str, ...]:
    """Every ``[model]`` and ``[training]`` field name (they are unique across the two tables)."""
    return tuple(_FIELD_SECTION)


def field_ranges() -> dict[str, str]:
    """The allowed values of every recipe field (``"model.bins": "2..256"``), as the checks enforce them."""
    ranges = {"input_dim": f"1..{MAX_COLUMNS}"}
    for section, settings_cls in _SECTIONS.items():
        for f in dataclasses.fields(settings_cls):
            ranges[f"{section}.{f.name}"] = f.metadata["check"].range
    return ranges


def describe_fields() -> list[tuple[str, str, Any, str]]:
    """(section, name, default, meaning) of every recipe field, for help texts and docs."""
    rows = []
    for section, settings_cls in _SECTIONS.items():
        for f in dataclasses.fields(settings_cls):
            rows.append((section, f.name, f.default, f.metadata["doc"]))
    return rows
