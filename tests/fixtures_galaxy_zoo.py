"""A miniature Kaggle "Galaxy Zoo - The Galaxy Challenge" folder, for the ingest tests.

``build_kaggle_fixture(root)`` writes, in exactly the Kaggle layout,

    root/training_solutions_rev1.csv             GalaxyID + the 37 Class columns, rows unsorted
    root/images_training_rev1/<GalaxyID>.jpg     424x424 RGB JPEGs

with galaxies drawn by the synthetic generator (rendered at 212 px in the middle of a
424 px sky, as SDSS cut-outs frame their galaxy), vote fractions that follow the Galaxy Zoo 2
decision tree, and the awkward cases: fractions exactly at and just below the threshold, a
truncated JPEG and a corrupt one. It returns what a correct ingest at τ = 0.9 must find.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from cosmotrain.data import simple_galaxies
from cosmotrain.data.galaxy_zoo import IMAGES_DIR, KAGGLE_COLUMNS, SOLUTIONS_CSV

KAGGLE_SIZE = 424


def tree_votes(smooth: float, edge_on: float, spiral: float, round_: float) -> dict[str, float]:
    """37 vote fractions consistent with the GZ2 tree, weighted as in the Kaggle table.

    ``smooth`` is Class1.1; ``round_`` (Class7.1) is a part of it. ``edge_on`` (Class2.1) and
    ``spiral`` (Class4.1) are parts of the disk votes 1 - smooth - 0.01 (0.01 = star/artifact).
    """
    disk = 1.0 - smooth - 0.01
    not_edge = disk - edge_on
    v = dict.fromkeys(KAGGLE_COLUMNS[1:], 0.0)
    v.update({"Class1.1": smooth, "Class1.2": disk, "Class1.3": 0.01,
              "Class7.1": round_, "Class7.2": smooth - round_,
              "Class2.1": edge_on, "Class2.2": not_edge, "Class9.1": edge_on,
              "Class3.1": 0.0, "Class3.2": not_edge, "Class4.1": spiral, "Class4.2": not_edge - spiral,
              "Class10.2": spiral, "Class11.2": spiral, "Class5.2": not_edge, "Class6.2": 1.0})
    return v


# (name, class expected at τ = 0.9 or -1, Class1.1, Class2.1, Class4.1, Class7.1)
CASES = {
    "round": (0, 0.97, 0.0, 0.0, 0.95),
    "edge-on": (1, 0.02, 0.94, 0.0, 0.0),
    "spiral": (2, 0.03, 0.0, 0.93, 0.0),
    "mixed": (-1, 0.5, 0.2, 0.2, 0.4),         # no class reaches τ
    "round-at-tau": (0, 0.95, 0.0, 0.0, 0.9),   # exactly τ: kept (≥ is inclusive)
    "round-below-tau": (-1, 0.95, 0.0, 0.0, 0.8999),
    "spiral-at-tau": (2, 0.05, 0.0, 0.9, 0.0),
}


def _csv_value(x: float) -> str:
    return repr(round(x, 6))


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def kaggle_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 [N,424,424,3]: synthetic galaxies of ``labels`` in the central 212 px of a noisy sky."""
    rng = np.random.default_rng(seed)
    params = simple_galaxies.draw_parameters(rng, len(labels))
    inner = simple_galaxies.render(np.asarray(labels), params, KAGGLE_SIZE // 2, rng)
    sky = simple_galaxies.SKY_LEVEL + rng.normal(0.0, 0.01, (len(labels), KAGGLE_SIZE, KAGGLE_SIZE, 3))
    out = simple_galaxies.asinh_stretch(sky)
    lo = KAGGLE_SIZE // 4
    out[:, lo:lo + KAGGLE_SIZE // 2, lo:lo + KAGGLE_SIZE // 2] = inner
    return out


def build_kaggle_fixture(root: str | Path, per_class: int = 4, seed: int = 0) -> dict:
    """Write the fixture under ``root``; return the expected outcome of an ingest at τ = 0.9.

    Returns ``{"labels": {GalaxyID: class}`` of galaxies that must end up in the dataset,
    ``"dropped"``: IDs below the threshold, ``"truncated"`` / ``"corrupt"``: IDs whose JPEG is
    broken (labelled, so the ingest tries them), ``"votes"``: {GalaxyID: (7.1, 2.1, 4.1)}}.
    """
    root = Path(root)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = [(name, k) for name in CASES for k in range(per_class if name in ("round", "edge-on", "spiral") else 1)]
    rows += [("round", "truncated"), ("spiral", "corrupt")]
    ids = 100000 + 7 * rng.permutation(len(rows)) + 3  # Kaggle-like six-digit IDs, rows not in ID order
    shape_of = {name: max(case[0], 0) for name, case in CASES.items()}
    pixels = kaggle_images(np.array([shape_of[name] for name, _ in rows]), seed)
    expected = {"labels": {}, "dropped": [], "truncated": [], "corrupt": [], "votes": {}}
    table = []
    for (name, tag), galaxy, image in zip(rows, ids, pixels):
        label, smooth, edge, spiral, round_ = CASES[name]
        votes = tree_votes(smooth, edge, spiral, round_)
        table.append([str(galaxy)] + [_csv_value(votes[c]) for c in KAGGLE_COLUMNS[1:]])
        data = jpeg_bytes(image)
        if tag == "truncated":
            data = data[:len(data) // 2]
        elif tag == "corrupt":
            data = b"\x89PNG but not really" + rng.bytes(2000)
        (root / IMAGES_DIR / f"{galaxy}.jpg").write_bytes(data)
        if tag in ("truncated", "corrupt"):
            expected[tag].append(int(galaxy))
        elif label < 0:
            expected["dropped"].append(int(galaxy))
        else:
            expected["labels"][int(galaxy)] = label
            expected["votes"][int(galaxy)] = (votes["Class7.1"], votes["Class2.1"], votes["Class4.1"])
    with open(root / SOLUTIONS_CSV, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(KAGGLE_COLUMNS)
        writer.writerows(table)
    return expected


def rewrite_csv(path: str | Path, drop: tuple[str, ...] = (), edit: dict | None = None) -> None:
    """Rewrite a vote table without the columns ``drop``, or with ``edit`` = {(row, column): text}."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    keep = [i for i, c in enumerate(rows[0]) if c not in drop]
    for (r, column), text in (edit or {}).items():
        rows[r + 1][rows[0].index(column)] = text
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([[row[i] for i in keep] for row in rows])
