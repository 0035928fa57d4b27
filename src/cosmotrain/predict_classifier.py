"""`cosmotrain predict classifier`: class probabilities for a dataset split or a folder of cut-outs, across MPI ranks.

The same crash-safe engine as ``sample gan`` (``sampleset``): per-rank parts, a virtual
``samples.h5`` with ``ids`` [N] (int64), ``probabilities`` [N, C] (float32) and ``predicted``
[N] (int8), and a manifest; a rerun finishes an interrupted set. Rank 0 then writes
``predictions.csv`` once: ``id`` (a dataset's galaxy ids) or ``file`` (a folder's file
names), ``p_<class>`` per class (``p_round, p_edge_on, p_spiral``) and ``predicted``
(the class name).

``--images`` is a galaxies dataset (its ``manifest.json``) or a folder of JPEG, PNG or FITS
cut-outs of any size, prepared as the ingest prepares the Kaggle JPEGs (``data.cutouts``:
central ``crop`` of the shorter side, bicubic resize to the classifier's input). A folder's
ids are the files' positions in the name-sorted listing. Files that cannot be read are
skipped, counted in the log and listed in the manifest (``images.unreadable``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from cosmotrain import dist, logs, rundir, sampleset
from cosmotrain.data import cutouts
from cosmotrain.data.reader import ShardSet
from cosmotrain.data.shards import MANIFEST
from cosmotrain.errors import UserError
from cosmotrain.files import sha256
from cosmotrain.inference import TrainedClassifier, image_shape_problem, load_classifier
from cosmotrain.rundir import RunDir

CSV = "predictions.csv"
log = logs.get("predict")


@dataclasses.dataclass
class Source:
    """What is classified: ``n`` images, ``read(start, stop)`` -> (ids int64 [k], images uint8 [k, H, W, 3]).

    ``identity`` tells a resumed set from another; ``describe`` goes into the manifest;
    ``names(ids)`` are the CSV's first column (header ``column``).
    """

    n: int
    read: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    identity: dict
    describe: dict
    column: str
    names: Callable[[np.ndarray], list]


def predict_classifier(run: str, checkpoint: str, images: str, split: str, out: str, batch: int = 256,
                       tta: bool = False, overwrite: bool = False, crop: float = cutouts.CROP) -> dict:
    """Make (or finish) the prediction set of ``run`` on ``images`` (a dataset's ``split`` or a folder) in ``out``."""
    sampleset.check_counts(1, batch, 0)
    if not 0 < crop <= 1:
        raise UserError(f"--crop must be a fraction in (0, 1], got {crop}; 0.5 prepares cut-outs as the ingest does")
    dataset = (Path(images) / MANIFEST).is_file()
    if not dataset:
        cutouts.list_cutouts(images)  # a bad --images fails before the model loads
    dist.configure_tensorflow()
    classifier = load_classifier(run, checkpoint)
    source = _dataset(images, split, classifier) if dataset else _folder(images, crop, classifier)
    names = classifier.class_names
    spec = sampleset.Spec(
        "classifier-predictions", source.n, batch,
        {"ids": ("int64", ()), "probabilities": ("float32", (len(names),)), "predicted": ("int8", ())},
        identity={"model_sha256": classifier.sha256, "tta": tta, "images": source.identity},
        attrs={"probabilities": {"class_names": json.dumps(names)}, "predicted": {"class_names": json.dumps(names)}})
    extra = {"model": {"run": str(Path(run).resolve()), "checkpoint": str(Path(classifier.checkpoint).resolve()),
                       "requested": checkpoint, "sha256": classifier.sha256, "epoch": classifier.state.epoch},
             "images": source.describe, "class_names": names, "csv": CSV,
             "config": {"predict": {"batch": batch, "crop": crop}, "run": RunDir(run).saved_config()}}
    manifest = sampleset.produce(out, spec, _predictions(source, classifier, tta), overwrite=overwrite, extra=extra,
                                 desc="predicting")
    rundir.write_with(write_csv, Path(out), source, names)
    sampleset.report(out, manifest, f"predictions (and {Path(out) / CSV})")
    return manifest


def _dataset(images: str, split: str, classifier: TrainedClassifier) -> Source:
    """Split ``split`` of the galaxies dataset ``images``, whose images must fit the classifier as they are."""
    data = ShardSet(images, split, kind="galaxies", shared=True)
    data.require_samples("predicting (pick another --split)")
    problem = image_shape_problem(classifier.image_shape, data.sample_shape("images"))
    if problem:
        raise UserError(f"{images}: the classifier takes {problem}")

    def read(start: int, stop: int):
        batch = data.read(start, stop, ("images", "ids"))
        return batch["ids"], batch["images"]

    return Source(data.n, read, {"manifest_sha256": sha256(data.root / MANIFEST), "split": split},
                  {"path": str(data.root.resolve()), "split": split}, "id", lambda ids: [int(i) for i in ids])


def _folder(folder: str, crop: float, classifier: TrainedClassifier) -> Source:
    """The readable cut-outs of ``folder``; every rank checks its share of the files, all learn the result."""
    files = cutouts.list_cutouts(folder)
    size = classifier.image_shape[0]
    start, stop = dist.share(len(files))
    mine = [cutouts.load_cutout(f, size, crop)[1] for f in files[start:stop]]
    problems = [p for part in dist.allgather_object(mine) for p in part]
    readable = np.array([i for i, p in enumerate(problems) if p is None], np.int64)
    unreadable = {files[i].name: p for i, p in enumerate(problems) if p is not None}
    if not len(readable):
        raise UserError(f"none of the {len(files)} cut-outs in {folder} can be read (e.g. {files[0].name}: "
                        f"{problems[0]}); pass JPEG, PNG or FITS images")
    if unreadable:
        shown = ", ".join(f"{name} ({why})" for name, why in list(unreadable.items())[:5])
        logs.root_warning(log, "%s", f"skipping {len(unreadable)} of {len(files)} files that cannot be read: {shown}"
                                     f"{', ...' if len(unreadable) > 5 else ''}; all are listed in the manifest")

    def read(start: int, stop: int):
        ids = readable[start:stop]
        return ids, np.stack([cutouts.load_cutout(files[i], size, crop)[0] for i in ids])

    listing = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    describe = {"path": str(Path(folder).resolve()), "files": len(files), "readable": int(len(readable)),
                "crop": crop, "unreadable": {"count": len(unreadable), "files": unreadable}}
    return Source(int(len(readable)), read, {"folder_sha256": digest, "crop": crop}, describe, "file",
                  lambda ids: [files[int(i)].name for i in ids])


def _predictions(source: Source, classifier: TrainedClassifier, tta: bool) -> sampleset.Compute:
    """``compute`` for the engine: ids, probabilities and predicted class of images start:stop."""
    def compute(start: int, stop: int) -> dict:
        ids, images = source.read(start, stop)
        probabilities = sampleset.require_finite(classifier(images, tta, batch=len(images)), start)
        return {"ids": ids, "probabilities": probabilities, "predicted": probabilities.argmax(axis=1).astype(np.int8)}
    return compute


def write_csv(out: Path, source: Source, names: list[str]) -> None:
    """``out/predictions.csv`` from the finished set's ``samples.h5``: one row per image, in set order."""
    import h5py

    with h5py.File(out / sampleset.SAMPLES, "r") as h5:
        ids, probs, predicted = h5["ids"][:], h5["probabilities"][:], h5["predicted"][:]
    header = [source.column] + [f"p_{name.replace('-', '_')}" for name in names] + ["predicted"]
    lines = [",".join(header)]
    for name, row, k in zip(source.names(ids), probs, predicted):
        lines.append(",".join([_csv_field(name)] + [f"{p:.6f}" for p in row] + [names[int(k)]]))
    rundir.write_text(out / CSV, "\n".join(lines) + "\n")


def _csv_field(value) -> str:
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
