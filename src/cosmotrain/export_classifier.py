"""`cosmotrain export classifier`: a trained classifier as a TensorFlow SavedModel, preprocessing inside.

``DIR`` is a SavedModel that plain TensorFlow loads (``tf.saved_model.load(DIR)``), without
cosmotrain. Its ``serving_default`` signature takes ``images``: uint8 [N, H, W, 3], any
H and W (all images of a call the same size), and returns ``probabilities``: float32 [N, C]
in the order of ``class_names``. Inside, each image is prepared as ``predict classifier``
prepares a folder of cut-outs (``data.cutouts``): the central ``crop`` fraction of its
shorter side, resized to the classifier's input with TensorFlow's antialiased bicubic resize
(Pillow's in ``predict``: the same pixels when the crop already has the input size, within a
few grey levels otherwise), rounded back to uint8, then the network (which scales uint8
itself). The loaded object also carries ``class_names`` (string [C]), ``image_size`` and
``crop``. ``DIR/cosmotrain.json`` records the run, checkpoint (path, sha256, epoch), class names,
input size and crop.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from cosmotrain import logs, rundir
from cosmotrain.data import cutouts
from cosmotrain.errors import UserError
from cosmotrain.inference import TrainedClassifier, load_classifier

INFO = "cosmotrain.json"
log = logs.get("export")


def export_classifier(run: str, out: str, checkpoint: str = "best", crop: float = cutouts.CROP,
                      overwrite: bool = False) -> dict:
    """Write the SavedModel of ``run``'s ``checkpoint`` to ``out``; a non-empty ``out`` only with ``overwrite``."""
    if not 0 < crop <= 1:
        raise UserError(f"--crop must be a fraction in (0, 1], got {crop}; 0.5 prepares cut-outs as the ingest does")
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise UserError(f"{out} already exists and is not empty; pick a new --out or pass --overwrite")
    classifier = load_classifier(run, checkpoint)
    info = {"run": str(Path(run).resolve()), "checkpoint": str(Path(classifier.checkpoint).resolve()),
            "requested": checkpoint, "sha256": classifier.sha256, "epoch": classifier.state.epoch,
            "class_names": classifier.class_names, "image_size": list(classifier.image_shape[:2]), "crop": crop,
            "signature": {"serving_default": {
                "inputs": {"images": "uint8 [N, H, W, 3]"},
                "outputs": {"probabilities": f"float32 [N, {len(classifier.class_names)}]"}}}}
    rundir.write_with(_save, classifier, target, crop, info)
    log.info("SavedModel of %s (epoch %s) in %s: uint8 images [N, H, W, 3] in, probabilities of %s out",
             Path(classifier.checkpoint).name, classifier.state.epoch, out, ", ".join(classifier.class_names))
    logs.result(f"exported {out}")
    return info


def _save(classifier: TrainedClassifier, target: Path, crop: float, info: dict) -> None:
    """Save into a temporary sibling folder, then swap it in: ``target`` is never half-written."""
    import tensorflow as tf

    temp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    module = serving_module(classifier, crop)
    try:
        tf.saved_model.save(module, str(temp), signatures={"serving_default": module.serve})
    except OSError as err:
        shutil.rmtree(temp, ignore_errors=True)
        raise UserError(f"cannot write {target} ({err.strerror or err}); choose a writable --out") from None
    rundir.write_json(temp / INFO, info)
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    os.replace(temp, target)


def serving_module(classifier: TrainedClassifier, crop: float):
    """A ``tf.Module`` whose ``serve(images uint8 [N, H, W, 3])`` returns {"probabilities": float32 [N, C]}."""
    import tensorflow as tf

    size = int(classifier.image_shape[0])
    model = classifier.model

    class Serving(tf.Module):
        def __init__(self):
            super().__init__(name="cosmotrain_classifier")
            self.model = model
            # variables, not constants: a SavedModel keeps the variables a module tracks
            self.class_names = tf.Variable(classifier.class_names, trainable=False, name="class_names")
            self.image_size = tf.Variable(size, trainable=False, name="image_size")
            self.crop = tf.Variable(crop, trainable=False, dtype=tf.float64, name="crop")

        @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")],
                     autograph=False)
        def serve(self, images):
            prepared = prepare(images, size, crop)
            return {"probabilities": self.model(prepared, training=False)}

    return Serving()


def prepare(images, size: int, crop: float):
    """uint8 [N, size, size, 3] from uint8 [N, H, W, 3]: central ``crop`` of the shorter side, then resized.

    The crop box is ``data.galaxy_zoo.crop_box``'s (offsets ``(H - k) // 2``, ``(W - k) // 2``,
    ``k = round(crop x min(H, W))``); the resize is skipped when ``k`` is already ``size``.
    """
    import tensorflow as tf

    h, w = tf.shape(images)[1], tf.shape(images)[2]
    keep = tf.maximum(1, tf.cast(tf.round(crop * tf.cast(tf.minimum(h, w), tf.float64)), tf.int32))
    top, left = (h - keep) // 2, (w - keep) // 2
    cut = images[:, top:top + keep, left:left + keep, :]

    def resized():
        pixels = tf.image.resize(tf.cast(cut, tf.float32), (size, size), method="bicubic", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)

    return tf.cond(tf.equal(keep, size), lambda: tf.ensure_shape(cut, (None, size, size, 3)), resized)
