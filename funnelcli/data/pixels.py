"""Pixel tables: images as rows, and random patches cut from pictures into such a table.

A pixel table holds one image per row, its D = H * W * C values in row-major order with the channels of a pixel
adjacent: column ``p{(i * W + j) * C + c}`` is channel c of the pixel at row i, column j. That is the order of
``image.reshape(-1)`` for an (H, W, C) array, and the order ``model.image_shape`` reads.

:func:`cut_patches` cuts random ``size`` x ``size`` patches, as BSDS300 was made from the Berkeley segmentation
photographs (Martin et al. 2001; Uria et al. 2013): each patch from a picture drawn uniformly, at a position drawn
uniformly within it, with one seeded generator. Images are read with matplotlib (PNG natively; JPEG and others
through Pillow).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from funnelcli.errors import UserError

__all__ = [
    "cut_patches",
    "parse_image_shape",
    "patch_table",
    "pixel_columns",
    "read_image",
    "sklearn_sample_images",
]

#: The most patches one call cuts (a table of 10^7 rows of 8x8 pixels is 5 GB of float64).
MAX_PATCHES = 10_000_000
#: The largest patch side: a row of a pixel table holds at most 1024 x 1024 x 3 values this way.
MAX_SIZE = 1024
_SHAPE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?")


def parse_image_shape(text: str) -> list[int]:
    """``HxW`` or ``HxWxC`` (``8x8``, ``32x32x3``) as ``[H, W, C]`` (C = 1 for ``HxW``); each a whole number >= 1.

    Raises :class:`UserError` (naming ``--image-shape``) for anything else.
    """
    match = _SHAPE.fullmatch(str(text))
    numbers = [int(n) for n in match.groups() if n is not None] if match else []
    if not numbers or any(n < 1 or n > 100_000 for n in numbers):
        raise UserError(
            f"--image-shape {text!r} is not HxW or HxWxC with whole numbers from 1 (e.g. 8x8, or 32x32x3 for colour)"
        )
    return numbers if len(numbers) == 3 else [*numbers, 1]


def shape_text(shape: Sequence[int]) -> str:
    """``[8, 8, 1]`` as ``8x8``, ``[32, 32, 3]`` as ``32x32x3``."""
    return "x".join(str(n) for n in (shape[:2] if len(shape) == 3 and shape[2] == 1 else shape))


def pixel_columns(dim: int) -> list[str]:
    """The column names of a pixel table of ``dim`` values per row: ``p0 ... p{dim-1}``."""
    return [f"p{j}" for j in range(dim)]


def read_image(path: str | os.PathLike[str], *, gray: bool = False) -> np.ndarray:
    """The pixels of an image file as an (H, W, C) uint8 array (C = 3, or 1 with ``gray``).

    8-bit values 0..255, as the file stores them: a PNG that matplotlib reads as floats in [0, 1] is scaled back
    by 255. An alpha channel is dropped; grey is the ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B, rounded.
    Raises :class:`UserError` in one line for a missing or unreadable file.
    """
    from matplotlib import image as mpimg

    shown = os.fspath(path)
    if not Path(path).is_file():
        raise UserError(f"{shown}: no such image file")
    try:
        pixels = np.asarray(mpimg.imread(path))
    except Exception as error:  # noqa: BLE001 - any reader failure means the same to the user: not an image
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise UserError(f"{shown} is not an image matplotlib can read ({reason}); give a PNG or JPEG file") from None
    if pixels.dtype.kind == "f":
        pixels = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0)
    return as_channels(pixels.astype(np.uint8), gray=gray)


def as_channels(pixels: np.ndarray, *, gray: bool = False) -> np.ndarray:
    """An (H, W), (H, W, 3) or (H, W, 4) uint8 image as (H, W, 3), or (H, W, 1) grey with ``gray``."""
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 1 if gray else 3, axis=2)
        return pixels
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise UserError(f"an image of shape {pixels.shape} is neither grey nor RGB")
    pixels = pixels[:, :, :3]
    if pixels.shape[2] == 1:
        return pixels if gray else np.repeat(pixels, 3, axis=2)
    if not gray:
        return pixels
    luma = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.rint(luma).astype(np.uint8)[:, :, None]


def sklearn_sample_images(*, gray: bool = False) -> list[tuple[str, np.ndarray]]:
    """scikit-learn's two bundled photographs (``china.jpg``, ``flower.jpg``, 427 x 640 RGB) as (name, pixels)."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    names = [Path(name).name for name in bunch.filenames]
    return [
        (name, as_channels(np.asarray(image, dtype=np.uint8), gray=gray))
        for name, image in zip(names, bunch.images, strict=True)
    ]


def cut_patches(images: Sequence[tuple[str, np.ndarray]], *, size: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` random ``size`` x ``size`` patches of ``images`` (name, (H, W, C) array) as rows (count, D).

    Patch k comes from image i_k ~ U{0..n-1} at top-left corner (r_k, c_k) uniform over the positions where it
    fits, all drawn from ``numpy.random.default_rng(seed)``: the same seed cuts the same patches. Each row is the
    patch in row-major order, channels adjacent (D = size * size * C). Every image must have the same channel
    count and be at least ``size`` on both sides.
    """
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
        raise UserError(f"--size must be a whole number of pixels in 1..{MAX_SIZE}, got {size!r}")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_PATCHES:
        raise UserError(f"--count must be a whole number in 1..{MAX_PATCHES:,}, got {count!r}")
    if not images:
        raise UserError("no images to cut patches from; give image files or --sklearn-samples")
    for name, pixels in images:
        height, width = pixels.shape[:2]
        if height < size or width < size:
            raise UserError(
                f"{name} is {height}x{width} pixels, smaller than a {size}x{size} patch; give a smaller --size or "
                "leave the image out"
            )
    channels = {pixels.shape[2] for _, pixels in images}
    if len(channels) > 1:
        raise UserError("the images mix grey and colour; pass --gray to cut grey patches from all of them")
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(images), size=count)
    rows = np.empty((count, size * size * channels.pop()), dtype=np.uint8)
    for i, (_, pixels) in enumerate(images):
        picked = np.flatnonzero(which == i)
        if not picked.size:
            continue
        height, width = pixels.shape[:2]
        tops = rng.integers(0, height - size + 1, size=picked.size)
        lefts = rng.integers(0, width - size + 1, size=picked.size)
        for k, top, left in zip(picked, tops, lefts, strict=True):
            rows[k] = pixels[top : top + size, left : left + size].reshape(-1)
    return rows


def patch_table(rows: np.ndarray) -> pd.DataFrame:
    """Patch rows (N, D) as a pixel table: integer columns ``p0 ... p{D-1}``."""
    return pd.DataFrame(rows.astype(np.int64), columns=pixel_columns(rows.shape[1]))
