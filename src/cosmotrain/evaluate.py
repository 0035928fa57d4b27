"""Evaluation of a trained classifier run on a held-out split, with optional D4 test-time augmentation.

``evaluate_classifier(run)`` restores the run's best (or latest) checkpoint, predicts the test
split and writes, under ``RUN/eval/`` (rank 0, each file atomically):

* ``metrics.json``: accuracy, loss, per-class precision/recall/F1/support, macro F1, the
  confusion matrix (rows: true class, columns: predicted), and warnings;
* ``confusion_matrix.png``, ``curves.png`` (loss and accuracy per epoch from
  ``history.csv``), ``misclassified.png`` (a grid of wrongly classified galaxies).

Under several ranks each rank predicts a contiguous part of the split and rank 0 gathers.
"""
from __future__ import annotations

import json
import os
import tempfile
import weakref
from pathlib import Path

import numpy as np

from cosmotrain import config, dist, logs
from cosmotrain.data import shards
from cosmotrain.errors import UserError

log = logs.get("evaluate")

PREDICT_BATCH = 256
MAX_SHOWN = 32


# ---------------------------------------------------------------- numbers (pure NumPy)

def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [n_classes, n_classes]: entry (i, j) counts samples of true class i predicted as j."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return cm


def classification_metrics(labels: np.ndarray, preds: np.ndarray, names: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and macro F1 from int labels and predictions.

    A ratio with a zero denominator (a class never predicted, or absent) is reported as 0.
    """
    cm = confusion_matrix(labels, preds, len(names))
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(tp), where=both > 0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(names)}
    return {"accuracy": float(tp.sum() / max(cm.sum(), 1)), "n": int(cm.sum()), "classes": list(names),
            "per_class": per_class, "macro_f1": float(f1.mean()), "confusion_matrix": cm.tolist()}


# ---------------------------------------------------------------- the model

def load_model(run: Path, which: str, image_shape: tuple, names: list[str]):
    """The run's model with the weights of its ``which`` ("best" or "latest") checkpoint."""
    import tensorflow as tf

    from cosmotrain.models.classifier import build_classifier
    from cosmotrain.train.checkpoint import CheckpointError, check_signature, read_state
    from cosmotrain.train.classifier import ClassifierConfig

    cfg = config.load(ClassifierConfig, run / "config.yaml")
    directory = run / "checkpoints" / ("best" if which == "best" else "")
    path = tf.train.latest_checkpoint(str(directory))
    if path is None:
        raise UserError(f"{run} has no {which} checkpoint; train it first (cosmotrain train classifier)")
    state = read_state(path)
    expected = {**state.signature, "model": config.to_dict(cfg.model), "image_shape": list(image_shape),
                "classes": list(names)}
    check_signature(path, state.signature, expected)
    model = build_classifier(cfg.model, image_shape, len(names))
    try:
        tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} does not fit the run's model ({str(err)[:160]})") from None
    return cfg, model, path, state


def predict(model, images: np.ndarray, tta: bool, batch: int = PREDICT_BATCH) -> np.ndarray:
    """Class probabilities float32 [N, C] for uint8 images [N, H, W, 3].

    With ``tta`` the probabilities are averaged over the 8 D4 transforms of each image
    (a galaxy's class does not change when it is rotated or mirrored).
    """
    transforms = range(8) if tta else (0,)
    forward = _compiled(model)
    total = np.zeros((len(images), model.output_shape[-1]), np.float64)
    for k in transforms:
        for s in range(0, len(images), batch):
            chunk = shards.d4_transform(images[s:s + batch], np.full(len(images[s:s + batch]), k))
            total[s:s + len(chunk)] += forward(chunk).numpy()
    return (total / len(transforms)).astype(np.float32)


_FORWARD = weakref.WeakKeyDictionary()


def _compiled(model):
    """The model's inference pass as one graph function (any batch size, traced once)."""
    import tensorflow as tf

    if model not in _FORWARD:
        spec = tf.TensorSpec((None, *model.input_shape[1:]), model.inputs[0].dtype)
        _FORWARD[model] = tf.function(lambda x: model(x, training=False), input_signature=[spec], autograph=False)
    return _FORWARD[model]


# ---------------------------------------------------------------- the command

def evaluate_classifier(run_dir: str | Path, tta: bool = False, which: str = "best", data: str | None = None,
                        split: str | None = None, out: str | Path | None = None) -> dict | None:
    """Evaluate ``run_dir`` and write ``out`` (default ``RUN/eval/``); returns the metrics on rank 0."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a classifier run (no config.yaml); pass the --out of 'train classifier'")
    saved = config.read_yaml(run / "config.yaml")
    root = data or saved.get("data", {}).get("path", "")
    split = split or saved.get("data", {}).get("test_split", "test")
    test = shards.ShardSet(root, split, kind="galaxies")
    names = list(test.attrs.get("class_names", ["round", "edge-on", "spiral"]))
    image_shape = test.sample_shape("images")
    cfg, model, path, state = load_model(run, which, image_shape, names)
    images, labels, probs = _predict_split(model, test, tta)
    if not dist.context().is_root:
        return None
    metrics = _metrics(labels, probs, names, run, test, path, state, tta)
    out = Path(out) if out else run / "eval"
    metrics["plots"] = write_plots(out, metrics, images, labels, probs, names, run / "history.csv")
    config.atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    log.info("test accuracy %.4f on %d %s images (%s checkpoint, epoch %s%s); outputs in %s", metrics["accuracy"],
             metrics["n"], split, which, state.epoch, ", D4 TTA" if tta else "", out)
    return metrics


def _predict_split(model, test: shards.ShardSet, tta: bool):
    """(images, labels, probs) of the whole split on rank 0; every rank predicts its part."""
    ctx = dist.context()
    bounds = np.linspace(0, test.n, ctx.size + 1).round().astype(int)
    part = test.read(bounds[ctx.rank], bounds[ctx.rank + 1], ("images", "labels"))
    probs = predict(model, part["images"], tta)
    gathered = dist.gather_object((part["images"], part["labels"], probs))
    if gathered is None:
        return None, None, None
    return tuple(np.concatenate([g[i] for g in gathered]) for i in range(3))


def _metrics(labels, probs, names, run: Path, test: shards.ShardSet, path: str, state, tta: bool) -> dict:
    labels = labels.astype(np.int64)
    preds = probs.argmax(axis=1)
    out = classification_metrics(labels, preds, names)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    out["loss"] = float(-np.log(picked).mean()) if len(labels) else float("nan")
    out.update(tta=tta, checkpoint=path, epoch=state.epoch, split=test.split, dataset=str(test.root),
               warnings=_warnings(run, out))
    for text in out["warnings"]:
        log.warning(text)
    return out


def _warnings(run: Path, metrics: dict) -> list[str]:
    """The run's training warnings (e.g. a class missing from training) plus classes absent here."""
    found = []
    summary = run / "metrics.json"
    if summary.is_file():
        found += json.loads(summary.read_text()).get("warnings", [])
    found += [f"class '{name}' has no samples in this split; its recall and F1 are reported as 0"
              for name, row in metrics["per_class"].items() if row["support"] == 0]
    return found


# ---------------------------------------------------------------- plots

def write_plots(out: Path, metrics: dict, images, labels, probs, names, history: Path) -> dict:
    """The three evaluation figures; returns {name: path}."""
    import matplotlib

    matplotlib.use("Agg")
    paths = {"confusion_matrix": out / "confusion_matrix.png", "curves": out / "curves.png",
             "misclassified": out / "misclassified.png"}
    save_figure(plot_confusion(np.array(metrics["confusion_matrix"]), names), paths["confusion_matrix"])
    if history.is_file():
        save_figure(plot_curves(history), paths["curves"])
    else:
        paths.pop("curves")
    save_figure(plot_misclassified(images, labels.astype(np.int64), probs, names), paths["misclassified"])
    return {k: str(v) for k, v in paths.items()}


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically (temp file + rename), then close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def plot_confusion(cm: np.ndarray, names: list[str]):
    """Confusion matrix: colour = fraction of the true class, text = count and fraction."""
    import matplotlib.pyplot as plt

    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.1%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix (accuracy {np.trace(cm) / max(cm.sum(), 1):.3f})")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    return fig


def plot_curves(history: Path):
    """Training and validation loss and accuracy per epoch."""
    import matplotlib.pyplot as plt

    from cosmotrain.train.common import read_history

    h = read_history(history)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(h.get("epoch", []), h.get(key, []), "o-", label="train")
        ax.plot(h.get("epoch", []), h.get(f"val_{key}", []), "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("training curves (averaged over ranks)")
    fig.tight_layout()
    return fig


def plot_misclassified(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, names: list[str]):
    """Up to ``MAX_SHOWN`` wrongly classified galaxies, most confident mistakes first.

    With no mistakes, the least confident correct predictions are shown instead.
    """
    import matplotlib.pyplot as plt

    preds = probs.argmax(axis=1)
    confidence = probs[np.arange(len(preds)), preds] if len(preds) else np.zeros(0)
    wrong = np.flatnonzero(preds != labels)
    if len(wrong):
        shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:MAX_SHOWN]
        title = f"{len(wrong)} misclassified of {len(labels)} (most confident mistakes first)"
    else:
        shown = np.argsort(confidence, kind="stable")[:MAX_SHOWN // 2]
        title = f"no misclassified galaxies of {len(labels)}; the {len(shown)} least confident correct ones"
    cols = max(1, min(8, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), shown):
        ax.imshow(images[i])
        ax.set_title(f"true {names[labels[i]]}\npred {names[preds[i]]} {confidence[i]:.2f}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
