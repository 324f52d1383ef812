"""The shape plan of the multi-scale image families (``nsf-image``, ``f-nsf-image``), in plain arithmetic.

Imports no torch: the recipe validator, the latent size and the parameter count read it before anything is built.
Columns are pixels in row-major order (H, W, C), the C channels of a pixel adjacent (docs/maths.md, section 7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from funnelcli.errors import UserError


def image_shape_for(shape: tuple[int, ...], columns: int, family: str, funnel: bool = False) -> tuple[int, int, int]:
    """(H, W, C) of ``columns`` pixel values: ``shape`` ([H, W] or [H, W, C]) checked against the column count, or,
    when ``shape`` is empty, a square one-channel image sqrt(D) x sqrt(D). A ``funnel`` family also takes an image
    one value short, its last (bottom-right pixel, last channel) missing, as BSDS300's 63 columns are 8x8 patches
    less their last pixel (:func:`missing_last`). A mismatch is a one-line UserError."""
    if not shape:
        side = math.isqrt(columns)
        if side * side != columns:
            raise UserError(
                f"family {family} needs model.image_shape (--image-shape HxW or HxWxC): {columns} columns are not a "
                "square one-channel image"
            )
        return side, side, 1
    height, width, channels = (*shape, 1) if len(shape) == 2 else tuple(shape)
    pixels = height * width * channels
    if holds(pixels, columns, funnel):
        return height, width, channels
    given = "x".join(str(n) for n in shape)
    short = (
        "; an image one value short (its last pixel missing, as in BSDS300's 63 columns) takes the funnel family "
        "f-nsf-image (recipe f-image), whose first squeeze drops that value"
        if pixels == columns + 1
        else ""
    )
    raise UserError(
        f"model.image_shape {given} holds {pixels} pixel values, but the table has {columns} columns; give the "
        f"shape of the images whose pixels the columns are (row-major H, W, C){short}"
    )


def holds(pixels: int, columns: int, funnel: bool) -> bool:
    """Whether an image of ``pixels`` values can be the ``columns``: all of them, or, for a ``funnel`` family, all
    but the last."""
    return pixels == columns or (funnel and pixels == columns + 1)


def missing_last(image: tuple[int, int, int], columns: int) -> bool:
    """Whether the ``columns`` are an (H, W, C) image less its last value (checked by :func:`image_shape_for`)."""
    return image[0] * image[1] * image[2] == columns + 1


@dataclass(frozen=True)
class Level:
    """One level of the multi-scale flow: ``steps`` flow steps on a (channels, height, width) tensor, then (except
    after the last level) a transition to the next level: ``factored`` channels are factored out to the latent
    (squeeze-and-split) or ``dropped`` of the ``4 * channels`` squeezed channels go to the ansatz (2-D funnel).
    ``entry_dropped`` (first level only) is set when the image's own squeeze is a 2-D funnel: that many of its
    ``4 C`` squeezed channels went to the ansatz, and ``channels`` were kept."""

    channels: int
    height: int
    width: int
    factored: int = 0
    dropped: int = 0
    entry_dropped: int = 0


def halvings(height: int, width: int) -> int:
    """How many times a 2x2 squeeze can halve both H and W."""
    count = 0
    while height % 2 == 0 and width % 2 == 0 and height and width:
        height, width, count = height // 2, width // 2, count + 1
    return count


def image_levels(
    image: tuple[int, int, int], levels: int, funnel: bool, reduce: float = 0.5, missing: bool = False
) -> list[Level]:
    """The levels of a multi-scale flow on an (H, W, C) image.

    The image is squeezed once (C, H, W) -> (4C, H/2, W/2) before the first level, and each transition halves H
    and W again, so an image allows at most ``halvings(H, W)`` levels: ``levels`` is capped there. Between levels
    the baseline factors out half the channels and squeezes the rest; the funnel squeezes and drops
    clip(round(reduce * 4c), 1, 4c - 2) of the 4c channels (the next level's coupling needs two; with
    reduce = 0.5 both hand the same shape to the next level). A funnel model with one level (a 2x2 image, or
    ``levels = 1``) has no transition, so the image's own squeeze is its funnel, sized by the same rule: the
    funnel family always reduces. So is an image ``missing`` its last value: the squeezed channels end with each
    tile's bottom-right pixel, which the funnel always drops, and its ansatz leaves the missing one out.
    """
    height, width, channels = image
    count = min(levels, halvings(height, width))
    if count == 0:
        raise UserError(
            f"an image of {height}x{width} pixels has an odd side; the image families halve H and W (2x2 tiles), so "
            "both must be even"
        )
    if missing and not funnel:
        raise UserError("an image one value short takes the funnel family f-nsf-image (recipe f-image)")
    c, h, w = 4 * channels, height // 2, width // 2
    entry = _dropped(reduce, c) if funnel and (count == 1 or missing) else 0
    c -= entry
    plan = []
    for index in range(count):
        entered = entry if index == 0 else 0
        if index == count - 1:
            plan.append(Level(c, h, w, entry_dropped=entered))
        elif funnel:
            dropped = _dropped(reduce, 4 * c)
            plan.append(Level(c, h, w, dropped=dropped, entry_dropped=entered))
            c, h, w = 4 * c - dropped, h // 2, w // 2
        else:
            factored = c - c // 2
            plan.append(Level(c, h, w, factored=factored))
            c, h, w = 4 * (c // 2), h // 2, w // 2
    return plan


def _dropped(reduce: float, squeezed: int) -> int:
    """What a 2-D funnel drops of ``squeezed`` channels: round(reduce * squeezed), leaving at least 2 and dropping
    at least 1."""
    return min(squeezed - 2, max(1, math.floor(reduce * squeezed + 0.5)))


def image_plan(
    shape: tuple[int, ...], columns: int, family: str, levels: int, funnel: bool, reduce: float
) -> tuple[tuple[int, int, int], list[Level]]:
    """(H, W, C) and the levels of an image family's model on ``columns`` pixel columns."""
    image = image_shape_for(shape, columns, family, funnel)
    return image, image_levels(image, levels, funnel, reduce, missing_last(image, columns))


def image_latent_dim(plan: list[Level]) -> int:
    """The latent size: the last level's values and every factored-out channel (dropped ones are not latent)."""
    last = plan[-1]
    return last.channels * last.height * last.width + sum(level.factored * level.height * level.width for level in plan)
