"""Galaxy Zoo ("The Galaxy Challenge", Kaggle 2014) ingest: vote table, 3-class rule, JPEG decoding.

The Kaggle layout::

    KAGGLE_DIR/training_solutions_rev1.csv     GalaxyID + 37 vote fractions Class1.1 .. Class11.6
    KAGGLE_DIR/images_training_rev1/<GalaxyID>.jpg   424x424 RGB SDSS cut-outs

The vote fractions follow the Galaxy Zoo 2 decision tree and are weighted by the fraction of
volunteers who reached each question, so ``Class7.1`` ("completely round") is a fraction of
*all* votes, as are ``Class2.1`` ("edge-on disk") and ``Class4.1`` ("spiral arms"). The
three never add up to more than 1, so with a threshold τ > 0.5 a galaxy qualifies for at most
one class:

    round   (0) when Class7.1 ≥ τ,   edge-on (1) when Class2.1 ≥ τ,   spiral (2) when Class4.1 ≥ τ,

and every other galaxy is dropped (τ = 0.9 keeps about 6000 galaxies).
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from cosmotrain.errors import UserError

SOLUTIONS_CSV = "training_solutions_rev1.csv"
IMAGES_DIR = "images_training_rev1"
ID_COLUMN = "GalaxyID"
VOTE_COLUMNS = ("Class7.1", "Class2.1", "Class4.1")  # round, edge-on, spiral: the label order
ANSWERS = {1: 3, 2: 2, 3: 2, 4: 2, 5: 4, 6: 2, 7: 3, 8: 7, 9: 3, 10: 3, 11: 6}
KAGGLE_COLUMNS = (ID_COLUMN,) + tuple(f"Class{q}.{a}" for q, n in ANSWERS.items() for a in range(1, n + 1))
UNREADABLE = ("missing", "truncated", "corrupt", "too-small")  # why an image can be skipped


# ---------------------------------------------------------------- the vote table

def check_threshold(tau: float) -> float:
    """``tau`` if it is a valid vote threshold, in (0.5, 1]; a UserError otherwise.

    Above 0.5 no galaxy can qualify for two classes (the three fractions sum to at most 1).
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.5 < tau <= 1.0:
        raise UserError(f"vote threshold {tau!r} is outside (0.5, 1]; at or below 0.5 a galaxy could "
                        f"qualify for two classes (e.g. --set galaxy_zoo.threshold=0.9)")
    return float(tau)


def locate(kaggle_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Paths of the vote table and the image folder in ``kaggle_dir``, or a UserError naming what is missing."""
    root = Path(kaggle_dir)
    if not root.is_dir():
        raise UserError(f"Galaxy Zoo folder {root} does not exist; pass the folder holding "
                        f"{SOLUTIONS_CSV} and {IMAGES_DIR}/ to --galaxy-zoo")
    table, images = root / SOLUTIONS_CSV, root / IMAGES_DIR
    for path, what in ((table, "vote table"), (images, "image folder")):
        zipped = [z for z in (path.with_name(path.name + ".zip"), path.with_suffix(".zip")) if z.exists()]
        if not path.exists():
            hint = f"; unzip {zipped[0].name} there first" if zipped else " (the Kaggle layout)"
            raise UserError(f"{root} has no {what} {path.name}{hint}")
    if not images.is_dir():
        raise UserError(f"{images} is not a folder; it should hold <GalaxyID>.jpg files")
    return table, images


def read_solutions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """GalaxyIDs (int64 [N]) and the round / edge-on / spiral vote fractions (float64 [N,3]).

    Reads only ``GalaxyID`` and ``VOTE_COLUMNS``; fractions stay float64, so a value written
    as 0.9 compares equal to τ = 0.9. A missing column, an unparsable or out-of-range value,
    a short row or a repeated GalaxyID is a UserError naming the line.
    """
    with open(path, "rb") as fh:
        rows = csv.reader(_utf8_lines(fh, path))
        header = [h.strip() for h in next(rows, [])]
        where = _column_positions(header, path)
        ids, votes = [], []
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            ids.append(_parse_id(row, where[ID_COLUMN], path, line))
            votes.append([_parse_fraction(row, where[c], c, path, line) for c in VOTE_COLUMNS])
    ids_array = np.array(ids, dtype=np.int64)
    _check_unique(ids_array, path)
    return ids_array, np.array(votes, dtype=np.float64).reshape(-1, len(VOTE_COLUMNS))


def _utf8_lines(fh, path) -> Iterator[str]:
    """The lines of the binary file ``fh`` as text; a leading byte-order mark (Excel writes one) is
    dropped, and a line that is not UTF-8 is a UserError naming it."""
    for line, raw in enumerate(fh, start=1):
        try:
            yield raw.decode("utf-8-sig" if line == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{path} line {line} is not UTF-8 text (byte 0x{raw[err.start]:02x}); save the vote "
                            f"table as UTF-8 CSV (Kaggle's file is plain ASCII)") from None


def _column_positions(header: list[str], path) -> dict[str, int]:
    missing = [c for c in (ID_COLUMN,) + VOTE_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{path} lacks column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                        f"expected the Kaggle header GalaxyID,Class1.1,...,Class11.6")
    return {c: header.index(c) for c in (ID_COLUMN,) + VOTE_COLUMNS}


def _parse_id(row: list[str], pos: int, path, line: int) -> int:
    try:
        return int(row[pos])
    except (IndexError, ValueError):
        raise UserError(f"{path} line {line}: GalaxyID {_cell(row, pos)!r} is not an integer") from None


def _parse_fraction(row: list[str], pos: int, column: str, path, line: int) -> float:
    try:
        value = float(row[pos])
    except (IndexError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also catches NaN
        raise UserError(f"{path} line {line}: {column} = {_cell(row, pos)!r} is not a vote fraction in [0, 1]")
    return value


def _cell(row: list[str], pos: int) -> str:
    return row[pos] if pos < len(row) else "<missing>"


def _check_unique(ids: np.ndarray, path) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise UserError(f"{path}: GalaxyID {values[counts > 1][0]} appears {counts[counts > 1][0]} times")


def assign_labels(votes: np.ndarray, tau: float) -> np.ndarray:
    """Class of each galaxy (int8 [N]: 0 round, 1 edge-on, 2 spiral, -1 dropped) from ``votes`` [N,3].

    A galaxy gets class c when its fraction for c is ≥ ``tau`` (inclusive) and no other
    fraction is; galaxies meeting none, or (in inconsistent tables) several, are dropped.
    """
    check_threshold(tau)
    passed = np.asarray(votes, dtype=np.float64) >= tau
    labels = np.argmax(passed, axis=1).astype(np.int8)
    labels[passed.sum(axis=1) != 1] = -1
    return labels


# ---------------------------------------------------------------- images

def crop_box(width: int, height: int, crop: int) -> tuple[int, int, int, int]:
    """(left, upper, right, lower) pixel box of the central ``crop`` x ``crop`` square of an image."""
    left, upper = (width - crop) // 2, (height - crop) // 2
    return left, upper, left + crop, upper + crop


def load_galaxy(path: str | os.PathLike, crop: int, size: int) -> tuple[np.ndarray | None, str | None]:
    """The central ``crop`` pixels of the JPEG at ``path`` resized to ``size``: uint8 [size,size,3].

    Returns ``(image, None)``, or ``(None, reason)`` with reason one of ``UNREADABLE`` when the
    file is missing, truncated, not a decodable image, or smaller than ``crop``.
    """
    rgb, problem = decode_rgb(path)
    if rgb is None:
        return None, problem
    if min(rgb.size) < crop:
        return None, "too-small"
    return crop_resize(rgb, crop, size), None


def decode_rgb(path: str | os.PathLike):
    """(PIL RGB image, None) of the image file at ``path``, fully decoded, or (None, reason in ``UNREADABLE``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, "missing"
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decodes everything: a truncated file fails here, not later
            return img.convert("RGB"), None
    except UnidentifiedImageError:
        return None, "corrupt"
    except OSError as err:
        return None, "truncated" if "truncated" in str(err) else "corrupt"
    except (SyntaxError, ValueError, Image.DecompressionBombError):
        return None, "corrupt"


def crop_resize(rgb, crop: int, size: int) -> np.ndarray:
    """The central ``crop`` x ``crop`` pixels of PIL image ``rgb``, resized (bicubic) to uint8 [size,size,3]."""
    from PIL import Image

    box = crop_box(rgb.width, rgb.height, crop)
    return np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC, box=box), dtype=np.uint8)


def load_galaxies(ids: Iterable[int], image_dir: str | os.PathLike, crop: int, size: int,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Images (uint8 [N,size,size,3]; zeros where unreadable) and per-ID problems (None if fine).

    ``progress``, if given, is called with 1 after each image.
    """
    ids = list(ids)
    images = np.zeros((len(ids), size, size, 3), np.uint8)
    problems: list[str | None] = []
    for i, galaxy in enumerate(ids):
        image, problem = load_galaxy(Path(image_dir) / f"{galaxy}.jpg", crop, size)
        if image is not None:
            images[i] = image
        problems.append(problem)
        if progress is not None:
            progress(1)
    return images, problems


def skipped_report(ids: np.ndarray, problems: list[str | None]) -> dict:
    """Manifest entry for unreadable images: ``{"count": n, "<reason>": [GalaxyID, ...], ...}``."""
    report: dict = {"count": sum(p is not None for p in problems)}
    for reason in UNREADABLE:
        report[reason] = [int(i) for i, p in zip(ids, problems) if p == reason]
    return report
