"""Trained models for inference, straight from a run directory: the Python API.

::

    from cosmotrain.inference import load_classifier, load_generator

    generator = load_generator("runs/gan")             # checkpoint "best", "latest" or a path
    patches = generator.sample(1000, seed=0)           # float32 [1000, 64, 64], μK_CMB
    classifier = load_classifier("runs/clf")
    probabilities = classifier(images, tta=True)       # uint8 [N, H, W, 3] -> float32 [N, 3]

Everything a model needs comes from its checkpoint: the network's configuration and input
shape (the checkpoint's signature), the weights, and for a generator its μK transform and
calibration filter. No trainer is imported, so inference needs neither Horovod nor the
training data. Call ``dist.configure_tensorflow()`` first in an MPI job, so each rank sizes
its thread pools and takes its own GPU.
"""
from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np

from cosmotrain import checkpoints, config
from cosmotrain.checkpoints import CheckpointError, TrainState
from cosmotrain.data.augment import d4_transform
from cosmotrain.errors import UserError
from cosmotrain.models.generator import TrainedGenerator, Transform

PREDICT_BATCH = 256
KINDS = {"cmb-dcgan": "GAN", "galaxy-classifier": "classifier"}  # checkpoint signature kinds


def load_generator(run: str | Path, checkpoint: str = "best") -> TrainedGenerator:
    """The generator of a GAN run: latents float32 [N, latent_dim] in, patches float32 [N, H, W] μK out.

    ``checkpoint`` is "best" (lowest monitor score), "latest", or a checkpoint path (prefix
    or folder). The weights (the moving average of G's weights when the run kept one), the
    μK transform and the calibration filter all come from the checkpoint. A missing run or
    checkpoint, or one of another kind, is a ``UserError``.
    """
    import tensorflow as tf

    from cosmotrain.models.dcgan import ModelConfig, build_generator

    path, state = _checkpoint(run, checkpoint, "cmb-dcgan", "cosmotrain train gan")
    model_cfg = config.from_dict(ModelConfig, state.signature["model"])
    network = build_generator(model_cfg)
    sampler = state.signature.get("sampler", "generator")  # the weight average when the run kept one
    tf.train.Checkpoint(**{sampler: network}).restore(path).expect_partial().assert_existing_objects_matched()
    transform = Transform(**state.extra["transform"])
    gains = state.extra.get("calibration_gains")  # the last monitor's calibration filter, if the run fitted one
    info = {"image_size": [model_cfg.image_size] * 2, "transform": transform._asdict(), "step": state.step,
            "dataset": state.extra.get("dataset", {}), "model": config.to_dict(model_cfg), "calibration_gains": gains}
    return TrainedGenerator(network, transform, path, info, None if gains is None else np.asarray(gains),
                            checkpoints.digest(path))


def load_classifier(run: str | Path, checkpoint: str = "best") -> "TrainedClassifier":
    """The classifier of a run: uint8 images [N, H, W, 3] in, class probabilities float32 [N, C] out.

    ``checkpoint`` is "best" (lowest validation loss), "latest", or a checkpoint path. A
    missing run or checkpoint, or one of another kind, is a ``UserError``.
    """
    import tensorflow as tf

    from cosmotrain.models.classifier import ModelConfig, build_classifier

    path, state = _checkpoint(run, checkpoint, "galaxy-classifier", "cosmotrain train classifier")
    signature = state.signature
    names = list(signature["classes"])
    model = build_classifier(config.from_dict(ModelConfig, signature["model"]), tuple(signature["image_shape"]),
                             len(names))
    try:
        tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit its own model ({str(err)[:160]})") from None
    return TrainedClassifier(model, names, path, checkpoints.digest(path), state)


def _checkpoint(run: str | Path, checkpoint: str, kind: str, made_by: str) -> tuple[str, TrainState]:
    """(prefix, state) of the checkpoint ``checkpoint`` of ``run``, which must hold a ``kind`` model."""
    if not Path(run).is_dir():
        raise UserError(f"run folder {run} does not exist; pass --run RUN made by '{made_by}'")
    path = checkpoints.resolve(run, checkpoint, made_by)
    state = checkpoints.read_state(path)
    found = state.signature.get("kind")
    if found != kind:
        what = f"a {KINDS[found]} run" if found in KINDS else f"a run of another kind ({found!r})"
        raise CheckpointError(f"{run} is {what}, not a {KINDS[kind]} run ({Path(path).name} holds a {found!r} "
                              f"model); pass a run made by '{made_by}'")
    return path, state


class TrainedClassifier:
    """A trained classifier: ``classifier(images, tta=False)`` gives class probabilities float32 [N, C].

    ``images`` are uint8 [N, H, W, 3] as stored in a galaxies dataset (the model scales them
    itself). With ``tta`` the probabilities are averaged over the 8 rotations and flips of
    each image (a galaxy's class does not change when it is turned or mirrored).
    ``class_names``, ``image_shape`` (H, W, 3), ``checkpoint`` (the prefix), ``sha256`` (its
    digest) and ``state`` (the checkpoint's training state: epoch, step, ...) describe it.
    """

    def __init__(self, model, class_names: list[str], checkpoint: str, sha256: str, state: TrainState):
        self.model, self.class_names, self.checkpoint, self.sha256, self.state = model, class_names, checkpoint, \
            sha256, state
        self.image_shape = tuple(model.input_shape[1:])

    def __call__(self, images: np.ndarray, tta: bool = False, batch: int = PREDICT_BATCH) -> np.ndarray:
        images = np.asarray(images)
        problem = image_shape_problem(self.image_shape, tuple(images.shape[1:]))
        if problem:
            raise UserError(f"the classifier takes {problem}")
        transforms = range(8) if tta else (0,)
        forward = _compiled(self.model)
        total = np.zeros((len(images), self.model.output_shape[-1]), np.float64)
        for k in transforms:
            for s in range(0, len(images), batch):
                chunk = d4_transform(images[s:s + batch], np.full(len(images[s:s + batch]), k))
                total[s:s + len(chunk)] += forward(chunk).numpy()
        return (total / len(transforms)).astype(np.float32)


def image_shape_problem(expected: tuple, got: tuple) -> str | None:
    """What differs between the image shape a classifier takes (H, W, 3) and ``got``, and the fix; None if equal."""
    if got == expected:
        return None
    shown = f"images of {'x'.join(map(str, expected))}, got {'x'.join(map(str, got)) or 'scalars'}"
    if len(got) == 3 and got[2] == 4:
        return f"{shown}: drop the alpha channel (images[..., :3]) or convert them to RGB"
    if len(got) != 3 or got[2] != 3:
        return f"{shown}: give them 3 colour channels (RGB; a grey image repeated 3 times)"
    return (f"{shown}: resize them to {expected[0]}x{expected[1]} pixels (for a dataset: remake it with --set "
            f"dataset.image_size={expected[0]}, or train a classifier on images of this size)")


_FORWARD = weakref.WeakKeyDictionary()


def _compiled(model):
    """The model's inference pass as one graph function (any batch size, traced once)."""
    import tensorflow as tf

    if model not in _FORWARD:
        spec = tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype)
        _FORWARD[model] = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    return _FORWARD[model]
