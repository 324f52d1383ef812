"""The report's figures: matplotlib figures of a model's training, samples, latent codes and OOD scores.

Every function takes plain arrays and returns a :class:`matplotlib.figure.Figure` drawn on the Agg canvas;
:func:`save_png` writes one atomically. pyplot is never used, so no global state or GUI backend is touched and
figures can be made from any thread. matplotlib is imported when a figure is made, so the rest of funnelcli
works without it (it is the ``report`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from funnelcli.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DATA_COLOUR = "#1f77b4"
MODEL_COLOUR = "#d62728"
OOD_COLOUR = "#ff7f0e"
DPI = 100


def require_matplotlib() -> None:
    """Refuse, with the command that fixes it, when matplotlib (the ``report`` extra) is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("the report needs matplotlib; install it with: pip install 'funnelcli[report]'") from None


def _figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _panel_figure(rows: int, cols: int, width: float, height: float, title_inches: float) -> Figure:
    """A figure for a grid of rows x cols small panels of about 2.4 x 2.0 inches, laid out with fixed margins.

    The constrained layout measures every tick label of every panel, which made a report's 36-panel figures
    most of its run time; panels of one size and small labels need no measuring."""
    figure = _figure(width, height, layout=None)
    figure.subplots_adjust(
        left=0.45 / width,
        right=1 - 0.15 / width,
        bottom=0.3 / height,
        top=1 - title_inches / height,
        wspace=0.35,
        hspace=0.55,
    )
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at ``path``, atomically (a reader never sees half an image)."""
    from funnelcli.data import atomic_path

    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)
    return Path(path)


def likelihood_label(bound: bool) -> str:
    """The axis label of a log-likelihood, or of the lower bound a VAE reports in its place."""
    return "ELBO, a lower bound on log p(x) (nats)" if bound else "log p(x) (nats)"


def _grid(count: int, columns: int) -> tuple[int, int]:
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def _bins(data: np.ndarray, samples: np.ndarray, bins: int = 30) -> np.ndarray:
    """Bin edges over the data's range and the central 99% of the samples, widened by 5%: a few far-out samples
    do not squash the histograms, and samples spread past a nearly constant column still show.

    Integer-valued data and samples over a short range (pixels, counts) get one bin per integer, centred on it.
    """
    finite = samples[np.isfinite(samples)]
    low, high = float(np.min(data)), float(np.max(data))
    if finite.size:
        low, high = min(low, float(np.quantile(finite, 0.005))), max(high, float(np.quantile(finite, 0.995)))
    integers = np.all(data == np.round(data)) and np.all(finite == np.round(finite))
    if integers and high - low <= 64:
        return np.arange(np.floor(low) - 0.5, np.ceil(high) + 1.5)
    margin = 0.05 * (high - low) if high > low else 0.5
    return np.linspace(low - margin, high + margin, bins + 1)


def _outside(values: np.ndarray, edges: np.ndarray) -> int:
    return int(np.sum((values < edges[0]) | (values > edges[-1])))


def training_curves(history: Sequence[Mapping], *, bound: bool = False) -> Figure:
    """Train and validation log-likelihood per validation pass against the step (``history_`` records with
    ``step``, ``train_log_prob``, ``val_log_prob``)."""
    figure = _figure(7, 4)
    axes = figure.add_subplot()
    records = [r for r in history if "step" in r]
    if not records:
        axes.text(0.5, 0.5, "no training curve recorded", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return figure
    steps = [r["step"] for r in records]
    for key, label, colour in (("train_log_prob", "train", DATA_COLOUR), ("val_log_prob", "validation", MODEL_COLOUR)):
        values = [r.get(key, math.nan) for r in records]
        axes.plot(steps, values, marker="o", markersize=3, label=label, color=colour)
    best = max(records, key=lambda r: r.get("val_log_prob", -math.inf))
    axes.axvline(best["step"], color="grey", linestyle=":", label=f"best validation (step {best['step']})")
    axes.set_xlabel("training step")
    axes.set_ylabel("mean " + likelihood_label(bound))
    axes.set_title("Training curve")
    axes.legend()
    return figure


def column_histograms(
    data: np.ndarray, samples: np.ndarray, columns: Sequence[str], *, max_columns: int = 36
) -> Figure:
    """A histogram per column (the first ``max_columns``) of held-out data against model samples, as densities.

    Shapes: ``data`` (N, D), ``samples`` (M, D); ``columns`` the D names.
    """
    shown = min(len(columns), max_columns)
    rows, cols = _grid(shown, 6)
    figure = _panel_figure(rows, cols, 2.4 * cols, 2.0 * rows + 0.6, title_inches=0.7)
    for j in range(shown):
        axes = figure.add_subplot(rows, cols, j + 1)
        edges = _bins(data[:, j], samples[:, j])
        axes.hist(
            data[:, j], bins=edges, density=True, color=DATA_COLOUR, alpha=0.5, label="data", histtype="stepfilled"
        )
        axes.hist(samples[:, j], bins=edges, density=True, histtype="step", color=MODEL_COLOUR, label="model")
        outside = _outside(samples[:, j], edges)
        axes.set_title(columns[j] + (f" (off-axis samples: {outside})" if outside else ""), fontsize=8)
        axes.tick_params(labelsize=6)
        if j == 0:
            axes.legend(fontsize=6)
    more = f" (first {shown} of {len(columns)} columns)" if shown < len(columns) else ""
    figure.suptitle(f"Columns: held-out data (filled) against model samples (line){more}")
    return figure


def corner_plot(data: np.ndarray, samples: np.ndarray, columns: Sequence[str], *, max_columns: int = 4) -> Figure:
    """Pairwise 2-D histograms (below the diagonal) and 1-D histograms (on it) of the first ``max_columns``
    columns, data on the left and model samples on the right, on the same axes ranges."""
    k = min(len(columns), max_columns)
    width, height = 4.2 * k + 0.6, 2.1 * k + 0.6
    figure = _figure(width, height, layout=None)  # fixed margins: see _panel_figure
    left, right = figure.subfigures(1, 2, wspace=0.05)
    half = width / 2  # each panel's width; its margins are fractions of it
    margins = dict(left=0.55 / half, right=1 - 0.1 / half, bottom=0.45 / height, top=1 - 0.4 / height)
    edges = [_bins(data[:, j], samples[:, j], bins=25) for j in range(k)]
    for panel, values, title, colour, colour_map in (
        (left, data, "held-out data", DATA_COLOUR, "Blues"),
        (right, samples, "model samples", MODEL_COLOUR, "Reds"),
    ):
        panel.suptitle(f"{title} ({len(values):,} rows)")
        grid = panel.subplots(k, k, squeeze=False, gridspec_kw=dict(margins, wspace=0.15, hspace=0.15))
        for i in range(k):
            for j in range(k):
                axes = grid[i, j]
                if j > i:
                    axes.set_axis_off()
                    continue
                if i == j:
                    axes.hist(values[:, j], bins=edges[j], color=colour, alpha=0.7, histtype="stepfilled")
                    axes.set_yticks([])
                else:
                    # An image of the 2-D histogram draws far faster than hist2d's mesh of patches.
                    counts, _, _ = np.histogram2d(values[:, j], values[:, i], bins=[edges[j], edges[i]])
                    axes.imshow(
                        counts.T,
                        origin="lower",
                        aspect="auto",
                        cmap=colour_map,
                        extent=(edges[j][0], edges[j][-1], edges[i][0], edges[i][-1]),
                        interpolation="nearest",
                    )
                axes.tick_params(labelsize=6)
                if i == k - 1:
                    axes.set_xlabel(columns[j], fontsize=7)
                else:
                    axes.set_xticklabels([])
                if j == 0 and i > 0:
                    axes.set_ylabel(columns[i], fontsize=7)
                elif i != j:
                    axes.set_yticklabels([])
    return figure


def latent_histograms(
    z: np.ndarray, distances: np.ndarray, *, max_coordinates: int = 24, bound: bool = False
) -> Figure:
    """A histogram per latent coordinate of the encoded held-out rows against the N(0, 1) density, with each
    coordinate's 1-Wasserstein distance from N(0, 1) in its title. ``z`` (N, k), ``distances`` (k,).

    For a VAE (``bound``) the coordinates are the encoder's means, whose prior is also N(0, 1).
    """
    k = z.shape[1]
    shown = min(k, max_coordinates)
    rows, cols = _grid(shown, 6)
    figure = _panel_figure(rows, cols, max(2.4 * cols, 8.0), 2.0 * rows + 0.7, title_inches=0.75)
    grid = np.linspace(-4, 4, 201)
    normal = np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi)
    edges = np.linspace(-4, 4, 33)
    for j in range(shown):
        axes = figure.add_subplot(rows, cols, j + 1)
        axes.hist(
            np.clip(z[:, j], -4, 4), bins=edges, density=True, color=DATA_COLOUR, alpha=0.6, histtype="stepfilled"
        )
        axes.plot(grid, normal, color="black", linewidth=1)
        axes.set_title(f"z{j}: W1 = {distances[j]:.3f}", fontsize=8)
        axes.tick_params(labelsize=6)
    more = f", first {shown} of {k}" if shown < k else ""
    what = "encoder means" if bound else "latent codes"
    figure.suptitle(
        f"{what.capitalize()} of held-out rows against N(0, 1) (line)\n"
        f"mean W1 {np.mean(distances):.3f} over {k} coordinates{more}; values beyond ±4 shown at the edge",
        fontsize=10,
    )
    return figure


def _principal_axes(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The data's column means and stds, and its first two principal directions in standardised units."""
    mean = data.mean(axis=0)
    std = np.where(data.std(axis=0) > 0, data.std(axis=0), 1.0)
    _, _, directions = np.linalg.svd((data - mean) / std, full_matrices=False)
    return mean, std, directions[:2].T


def temperature_samples(data: np.ndarray, samples_by_temperature: Mapping[float, np.ndarray]) -> Figure:
    """Held-out data beside model samples at each temperature, projected on the data's first two principal
    components (standardised columns), on the same axes.

    ``data`` (N, D); ``samples_by_temperature`` maps T to samples (M, D) drawn with the base standard
    deviation scaled by T; T < 1 gives more typical rows, nearer the data's modes. One column, or fewer than
    three rows: histograms of the first column instead.
    """
    panels = [("held-out data", data, DATA_COLOUR)] + [
        (f"samples, T = {t:g}", values, MODEL_COLOUR) for t, values in samples_by_temperature.items()
    ]
    figure = _figure(3.2 * len(panels), 3.4)
    grid = figure.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    if data.shape[1] == 1 or len(data) < 3:
        edges = _bins(data[:, 0], data[:, 0], bins=40)
        for axes, (title, values, colour) in zip(grid, panels, strict=True):
            axes.hist(values[:, 0], bins=edges, density=True, color=colour, alpha=0.7, histtype="stepfilled")
            axes.set_title(title, fontsize=9)
        figure.suptitle("Samples at each temperature")
        return figure
    mean, std, axes_2d = _principal_axes(data)
    projected_data = ((data - mean) / std) @ axes_2d
    low, high = projected_data.min(axis=0), projected_data.max(axis=0)
    margin = 0.1 * (high - low)
    for axes, (title, values, colour) in zip(grid, panels, strict=True):
        projected = ((values - mean) / std) @ axes_2d
        axes.scatter(projected[:, 0], projected[:, 1], s=3, alpha=0.4, color=colour, rasterized=True)
        axes.set_title(title, fontsize=9)
        axes.set_xlabel("PC 1", fontsize=8)
        axes.set_xlim(low[0] - margin[0], high[0] + margin[0])
        axes.set_ylim(low[1] - margin[1], high[1] + margin[1])
    grid[0].set_ylabel("PC 2", fontsize=8)
    figure.suptitle("Samples at temperatures, on the data's first two principal components")
    return figure


#: Pixels of the white gap between the images of a grid.
IMAGE_GAP = 1


def image_grid(
    panels: Mapping[str, np.ndarray],
    shape: tuple[int, int, int],
    value_range: tuple[float, float],
    *,
    columns: int = 8,
    title: str = "",
) -> Figure:
    """Rows of pixels drawn as images, ``columns`` to a row, one titled panel per entry of ``panels``.

    Each panel's array is (N, H * W * C), the pixels of an (H, W, C) ``shape`` in row-major order, a pixel's
    channels adjacent. Values are clipped to ``value_range`` = (low, high) and scaled to [0, 1]; C = 1 is drawn
    grey, C = 3 as RGB, any other C as its channels' grey planes side by side. Image i sits at the same place in
    every panel, so panels of rows and of their reconstructions can be read pair by pair. Rows one value short (an
    image less its last value, as BSDS300's patches) are drawn with that value at the row's mean.
    """
    height, width, channels = shape
    low, high = value_range
    span = high - low if high > low else 1.0
    mosaics = []
    for values in panels.values():
        values = np.asarray(values, dtype=np.float64)
        if values.shape[1] == height * width * channels - 1:
            values = np.hstack([values, values.mean(axis=1, keepdims=True)])
        images = np.clip((values - low) / span, 0.0, 1.0).reshape(-1, *shape)
        if channels != 3:  # grey: one plane, or each channel's plane beside the next
            images = images.transpose(0, 1, 3, 2).reshape(len(images), height, channels * width, 1)
        mosaics.append(_mosaic(images, columns))
    total_width = sum(m.shape[1] for m in mosaics) + 4 * (len(mosaics) - 1)
    inches = min(8.0 / total_width, 8.0 / max(m.shape[0] for m in mosaics))
    figure = _figure(max(2.0, inches * total_width), max(1.5, inches * mosaics[0].shape[0] + 0.6))
    grid = figure.subplots(1, len(mosaics), squeeze=False)[0]
    for axes, name, mosaic in zip(grid, panels, mosaics, strict=True):
        if mosaic.shape[2] == 1:
            axes.imshow(mosaic[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            axes.imshow(mosaic, interpolation="nearest")
        axes.set_title(name, fontsize=9)
        axes.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def _mosaic(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, H, W, C) images in [0, 1] laid out ``columns`` to a row with white gaps, shape (rows * (H + gap) - gap,
    columns * (W + gap) - gap, C); cells past the last image are left white."""
    count, height, width, channels = images.shape
    rows, columns = _grid(max(count, 1), columns)
    step_y, step_x = height + IMAGE_GAP, width + IMAGE_GAP
    mosaic = np.ones((rows * step_y - IMAGE_GAP, columns * step_x - IMAGE_GAP, channels))
    for i, image in enumerate(images):
        y, x = divmod(i, columns)
        mosaic[y * step_y : y * step_y + height, x * step_x : x * step_x + width] = image
    return mosaic


def log_likelihood_histograms(
    log_prob_in: np.ndarray, log_prob_out: np.ndarray, *, bound: bool = False, labels: tuple[str, str] = ("test", "OOD")
) -> Figure:
    """Histograms of the per-row log-likelihood of in-distribution (test) and out-of-distribution rows.

    The axis starts at the 2% quantile of both together (less 5% of the range), so that a few catastrophic
    rows, counted in the title and drawn at the left edge, do not hide the two bulks.
    """
    figure = _figure(7, 4)
    axes = figure.add_subplot()
    both = np.concatenate([log_prob_in, log_prob_out])
    finite = both[np.isfinite(both)]
    low, high = (np.quantile(finite, 0.02), finite.max()) if finite.size else (-1.0, 0.0)
    low -= 0.05 * (high - low)
    edges = np.linspace(low, high if high > low else low + 1, 60)
    for values, label, colour in ((log_prob_in, labels[0], DATA_COLOUR), (log_prob_out, labels[1], OOD_COLOUR)):
        axes.hist(
            np.clip(values, low, None),
            bins=edges,
            density=True,
            alpha=0.5,
            color=colour,
            label=label,
            histtype="stepfilled",
        )
    below = int(np.sum(both < low))
    axes.set_xlabel(likelihood_label(bound))
    axes.set_ylabel("density of rows")
    axes.set_title(
        "Per-row log-likelihood" + (f" ({below} rows below the axis, shown at its left edge)" if below else "")
    )
    axes.legend()
    return figure


def roc_curve_figure(fpr: np.ndarray, tpr: np.ndarray, auroc: float, *, bound: bool = False) -> Figure:
    """The ROC curve of anomaly detection with -log p as the score (OOD rows positive)."""
    figure = _figure(4.8, 4.6)
    axes = figure.add_subplot()
    axes.plot(fpr, tpr, color=OOD_COLOUR, label=f"AUROC = {auroc:.3f}")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    axes.set_xlabel("false positive rate (test rows flagged)")
    axes.set_ylabel("true positive rate (OOD rows flagged)")
    axes.set_title("ROC, score = -" + ("ELBO" if bound else "log p(x)"))
    axes.set_aspect("equal")
    axes.legend(loc="lower right")
    return figure


def sweep_figure(sweep) -> Figure:
    """Validation log-likelihood against latent size for a :class:`funnelcli.sweep.Sweep`: the funnel levels
    with ±1 standard-error bars, the chosen size circled, probabilistic PCA at the same sizes, and horizontal
    reference lines for the full-dimension flow, the full Gaussian and the Gaussian mixture."""
    figure = _figure(7, 4.5)
    axes = figure.add_subplot()
    levels = [level for level in sweep.levels if math.isfinite(level.val_log_prob)]
    sizes = [level.latent_dim for level in levels]
    axes.errorbar(
        sizes,
        [level.val_log_prob for level in levels],
        yerr=[level.val_stderr for level in levels],
        marker="o",
        capsize=3,
        color=MODEL_COLOUR,
        label=f"funnel ({sweep.recipe}, {sweep.ansatz or 'no'} ansatz)",
    )
    chosen = [level for level in levels if level.latent_dim == sweep.chosen_latent_dim]
    for level in chosen:
        axes.plot(
            [level.latent_dim],
            [level.val_log_prob],
            marker="o",
            markersize=14,
            markerfacecolor="none",
            color="black",
            linestyle="none",
            label=f"chosen: latent {level.latent_dim}",
        )
    ppca = sorted(sweep.baselines.get("ppca", []), key=lambda entry: entry["latent_dim"])
    if ppca:
        axes.errorbar(
            [entry["latent_dim"] for entry in ppca],
            [_finite_or_nan(entry["val_log_prob"]) for entry in ppca],
            yerr=[_finite_or_nan(entry["val_stderr"]) for entry in ppca],
            marker="s",
            capsize=3,
            color=DATA_COLOUR,
            linestyle="--",
            label="probabilistic PCA (same size)",
        )
    references = []
    if sweep.full is not None and math.isfinite(sweep.full.val_log_prob):
        references.append((f"full-dimension flow ({sweep.full.family}, {sweep.input_dim} dims)", sweep.full, "-"))
    for name, style in (("gmm", "-."), ("gaussian", ":")):
        entry = sweep.baselines.get(name)
        if entry is not None and entry.get("val_log_prob") is not None:
            references.append((entry["label"], entry, style))
    for label, entry, style in references:
        value = entry.val_log_prob if hasattr(entry, "val_log_prob") else entry["val_log_prob"]
        axes.axhline(value, color="grey" if style != "-" else "black", linestyle=style, linewidth=1, label=label)
    axes.set_xlabel("latent size (dimensions kept)")
    axes.set_ylabel("mean validation log-likelihood (nats/row)")
    axes.set_title(f"How many dimensions? {sweep.input_dim} columns; chosen latent size {sweep.chosen_latent_dim}")
    if sizes:
        axes.set_xticks(sorted(set(sizes) | {entry["latent_dim"] for entry in ppca}))
    axes.legend(fontsize="small")
    return figure


def _finite_or_nan(value) -> float:
    return math.nan if value is None else float(value)
