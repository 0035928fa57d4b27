"""`cosmotrain predict classifier`: class probabilities for every image of a dataset split, across MPI ranks.

The same crash-safe engine as ``sample gan`` (``sampleset``): per-rank parts, a virtual
``samples.h5`` with ``ids`` [N], ``probabilities`` [N, C] and ``predicted`` [N] (int8), and a
manifest; a rerun finishes an interrupted set.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cosmotrain import dist, sampleset
from cosmotrain.data.reader import ShardSet
from cosmotrain.data.shards import MANIFEST
from cosmotrain.errors import UserError
from cosmotrain.files import sha256
from cosmotrain.inference import TrainedClassifier, image_shape_problem, load_classifier
from cosmotrain.rundir import RunDir


def predict_classifier(run: str, checkpoint: str, images: str, split: str, out: str, batch: int = 256,
                       tta: bool = False, overwrite: bool = False) -> dict:
    """Make (or finish) the prediction set of ``run`` on split ``split`` of ``images`` in ``out``."""
    sampleset.check_counts(1, batch, 0)
    data = ShardSet(images, split, kind="galaxies")
    data.require_samples("predicting (pick another --split)")
    dist.configure_tensorflow()
    classifier = load_classifier(run, checkpoint)
    problem = image_shape_problem(classifier.image_shape, data.sample_shape("images"))
    if problem:
        raise UserError(f"{images}: the classifier takes {problem}")
    names = classifier.class_names
    spec = sampleset.Spec(
        "classifier-predictions", data.n, batch,
        {"ids": ("int64", ()), "probabilities": ("float32", (len(names),)), "predicted": ("int8", ())},
        identity={"model_sha256": classifier.sha256, "tta": tta,
                  "images": {"manifest_sha256": sha256(data.root / MANIFEST), "split": split}},
        attrs={"probabilities": {"class_names": json.dumps(names)}, "predicted": {"class_names": json.dumps(names)}})
    extra = {"model": {"run": str(Path(run).resolve()), "checkpoint": str(Path(classifier.checkpoint).resolve()),
                       "requested": checkpoint, "sha256": classifier.sha256, "epoch": classifier.state.epoch},
             "images": {"path": str(data.root.resolve()), "split": split}, "class_names": names,
             "config": {"predict": {"batch": batch}, "run": RunDir(run).saved_config()}}
    manifest = sampleset.produce(out, spec, _predictions(data, classifier, tta), overwrite=overwrite, extra=extra,
                                 desc="predicting")
    sampleset.report(out, manifest, "predictions")
    return manifest


def _predictions(images: ShardSet, classifier: TrainedClassifier, tta: bool) -> sampleset.Compute:
    """``compute`` for the engine: ids, probabilities and predicted class of images start:stop."""
    def compute(start: int, stop: int) -> dict:
        batch = images.read(start, stop, ("images", "ids"))
        probabilities = sampleset.require_finite(classifier(batch["images"], tta, batch=len(batch["images"])),
                                                 start)
        return {"ids": batch["ids"], "probabilities": probabilities,
                "predicted": probabilities.argmax(axis=1).astype(np.int8)}
    return compute
