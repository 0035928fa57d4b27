"""Folders of galaxy cut-outs (JPEG, PNG or FITS, any size), prepared as the ingest prepares the Kaggle JPEGs.

``list_cutouts(folder)`` lists the image files of a folder (not its subfolders), sorted by
name; ``load_cutout(path, size, crop)`` turns one into what a classifier reads: the central
``crop`` fraction of the image's shorter side (the ingest keeps 212 of the Kaggle cut-outs'
424 px: ``CROP`` = 0.5), resized bicubically to uint8 [size, size, 3], exactly as
``galaxy_zoo.load_galaxy``. A grey image becomes three equal channels, an alpha channel is
dropped.

FITS cut-outs: the first HDU with 2-D data [H, W] (grey) or 3-D data [3, H, W] or [H, W, 3]
(channels). uint8 data are used as they are; other data (fluxes) are shown as the SDSS colour
images are, with an asinh stretch: ``v = (x - sky) / (p99.5 - sky)`` per channel (sky: the
median, p99.5: the 99.5th percentile of the image), then ``255 asinh(v / 0.1) / asinh(10)``
clipped to 0..255.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cosmotrain.data.galaxy_zoo import crop_resize, decode_rgb
from cosmotrain.errors import UserError

CROP = 212 / 424                               # the ingest's central crop of a Kaggle cut-out, as a fraction
PICTURES = (".jpg", ".jpeg", ".png")
FITS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")
SOFTENING = 0.1                                # of the FITS asinh stretch, in units of the 99.5th percentile


def is_cutout(path: Path) -> bool:
    """Whether ``path``'s name ends like an image file this module reads (case-insensitive)."""
    name = path.name.lower()
    return name.endswith(PICTURES) or name.endswith(FITS)


def list_cutouts(folder: str | os.PathLike) -> list[Path]:
    """The cut-out files of ``folder`` (not its subfolders), sorted by name; a UserError if there are none."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"--images {folder} is neither a galaxies dataset nor a folder; pass one of them")
    files = sorted(p for p in root.iterdir() if p.is_file() and is_cutout(p))
    if not files:
        raise UserError(f"{folder} holds no JPEG, PNG or FITS files (nor a dataset manifest.json); pass a folder of "
                        f"cut-outs or a galaxies dataset")
    return files


def load_cutout(path: str | os.PathLike, size: int, crop: float = CROP) -> tuple[np.ndarray | None, str | None]:
    """uint8 [size, size, 3] from the cut-out at ``path``, or (None, reason) when it cannot be read.

    ``crop`` (0 < crop <= 1) is the central fraction of the shorter side kept before resizing.
    """
    from PIL import Image

    if Path(path).name.lower().endswith(FITS):
        pixels, problem = fits_rgb(path)
        rgb = None if pixels is None else Image.fromarray(pixels)
    else:
        rgb, problem = decode_rgb(path)
    if rgb is None:
        return None, problem
    keep = max(1, int(round(crop * min(rgb.size))))
    return crop_resize(rgb, keep, size), None


def fits_rgb(path: str | os.PathLike) -> tuple[np.ndarray | None, str | None]:
    """uint8 [H, W, 3] of the first image HDU of a FITS file, or (None, reason)."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdus:
            data = next((h.data for h in hdus if h.data is not None and h.data.ndim in (2, 3)), None)
            data = None if data is None else np.array(data)
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError, TypeError, IndexError):
        return None, "corrupt"
    if data is None:
        return None, "no-image"
    if data.ndim == 2:
        data = np.repeat(data[..., None], 3, axis=2)
    elif data.shape[0] == 3 and data.shape[-1] != 3:
        data = np.moveaxis(data, 0, -1)
    if data.shape[-1] != 3 or min(data.shape[:2]) < 2:
        return None, "not-rgb"
    if data.dtype == np.uint8:
        return data, None
    return asinh_display(data.astype(np.float64)), None


def asinh_display(flux: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] of float flux [H, W, 3]: per channel sky-subtracted, scaled and asinh-stretched."""
    flux = np.where(np.isfinite(flux), flux, np.nan)
    sky = np.nanmedian(flux, axis=(0, 1))
    top = np.nanpercentile(flux, 99.5, axis=(0, 1))
    v = np.nan_to_num((flux - sky) / np.where(top > sky, top - sky, 1.0), nan=0.0)
    shown = np.arcsinh(v / SOFTENING) / np.arcsinh(1.0 / SOFTENING)
    return np.clip(np.rint(shown * 255.0), 0, 255).astype(np.uint8)
