"""`cosmotrain evaluate classifier`: a trained classifier on a held-out split, with optional D4 test-time augmentation.

``evaluate_classifier(run)`` loads the run's best (or latest, or any) checkpoint
(``inference.load_classifier``), predicts the test split and writes, under ``RUN/eval/``
(rank 0, each file atomically):

* ``metrics.json``: accuracy, loss, per-class precision/recall/F1/support, macro F1, the
  confusion matrix (rows: true class, columns: predicted) over the galaxies a class keeps;
  the vote-fraction RMSE over every galaxy (kept or not, as the Kaggle challenge scored);
  which checkpoint (path, sha256, epoch), split and dataset, and warnings;
* ``confusion_matrix.png``, ``misclassified.png`` (a grid of wrongly classified galaxies),
  and ``curves.png`` (loss, accuracy and learning rate per epoch from ``history.csv``).

With test-time augmentation the evaluation files are ``metrics_tta.json``,
``confusion_matrix_tta.png`` and ``misclassified_tta.png``, beside the plain ones. An
evaluation already there is replaced only with ``overwrite``.

Under several ranks each rank predicts a contiguous part of the split and rank 0 gathers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cosmotrain import dist, logs, rundir
from cosmotrain.data.reader import ShardSet
from cosmotrain.errors import StorageError, UserError
from cosmotrain.files import writable_problem
from cosmotrain.inference import TrainedClassifier, load_classifier
from cosmotrain.plots import classification, images, training
from cosmotrain.rundir import RunDir

log = logs.get("evaluate")


# ---------------------------------------------------------------- numbers (pure NumPy)

def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """int64 [n_classes, n_classes]: entry (i, j) counts samples of true class i predicted as j."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, np.int64), np.asarray(preds, np.int64)), 1)
    return cm


def vote_rmse(probs: np.ndarray, votes: np.ndarray) -> float:
    """Root mean square difference between ``probs`` and ``votes`` (float [N, C]) over all N x C entries."""
    return float(np.sqrt(np.mean((np.asarray(probs, np.float64) - votes) ** 2))) if len(votes) else float("nan")


def vote_metrics(probs: np.ndarray, votes: np.ndarray, labels: np.ndarray) -> dict:
    """Vote-fraction RMSE over every galaxy, the kept and the unkept ones, and of the mean fractions.

    ``vote_rmse_of_mean`` predicts the split's mean fractions for every galaxy: the figure a
    model must beat to have learnt anything about the votes.
    """
    kept = np.asarray(labels) >= 0
    mean = np.broadcast_to(votes.mean(axis=0), votes.shape) if len(votes) else votes
    return {"vote_rmse": vote_rmse(probs, votes), "vote_rmse_kept": vote_rmse(probs[kept], votes[kept]),
            "vote_rmse_unkept": vote_rmse(probs[~kept], votes[~kept]), "vote_rmse_of_mean": vote_rmse(mean, votes),
            "n_all": int(len(votes)), "n_unkept": int((~kept).sum())}


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


# ---------------------------------------------------------------- the command

def evaluate_classifier(run_dir: str | Path, tta: bool = False, which: str = "best", data: str | None = None,
                        split: str | None = None, out: str | Path | None = None, overwrite: bool = False) -> dict | None:
    """Evaluate ``run_dir`` and write ``out`` (default ``RUN/eval/``); returns the metrics on rank 0.

    ``which`` is "best", "latest" or a checkpoint path. Raises ``UserError`` before any
    prediction when the run is not a classifier run or ``out`` already holds this kind of
    evaluation (plain or TTA) and ``overwrite`` is not given.
    """
    run = RunDir(run_dir)
    classifier = load_classifier(run.path, which)
    saved = run.saved_config()
    root = data or saved.get("data", {}).get("path", "")
    split = split or saved.get("data", {}).get("test_split", "test")
    out = Path(out) if out else run.eval
    suffix = "_tta" if tta else ""
    dist.root_computes(_check_out, out / f"metrics{suffix}.json", overwrite)
    test = ShardSet(root, split, kind="galaxies", shared=True)
    test.require_samples("evaluation (pass --split)")
    test.check_values(("labels",))
    problem = writable_problem(out)
    if problem:
        raise StorageError(f"cannot write the evaluation to {out}: {problem}; pass a writable --out")
    names = list(test.attrs.get("class_names", classifier.class_names))
    if names != classifier.class_names:
        raise UserError(f"{root} has the classes {names}, the classifier {classifier.class_names}; evaluate it on a "
                        f"dataset of its own classes")
    pixels, labels, votes, probs = _predict_split(classifier, test, tta)
    if pixels is None:
        return None
    kept = labels >= 0
    metrics = {**_metrics(labels[kept], probs[kept], names, run, test, classifier, tta),
               **vote_metrics(probs, votes, labels)}
    title = _title(run, test, which, classifier, tta)
    metrics["plots"] = _plots(out, suffix, metrics, title, pixels[kept], labels[kept], probs[kept], names, run)
    rundir.write_json(out / f"metrics{suffix}.json", metrics)
    log.info("test accuracy %.4f on the %d %s galaxies a class keeps, vote RMSE %.4f on all %d (%s checkpoint, "
             "epoch %s%s); outputs in %s", metrics["accuracy"], metrics["n"], split, metrics["vote_rmse"],
             metrics["n_all"], which, classifier.state.epoch, ", D4 TTA" if tta else "", out)
    return metrics


def _check_out(path: Path, overwrite: bool) -> None:
    """Refuse to replace the evaluation in ``path`` (a metrics file) unless ``overwrite``."""
    if overwrite or not path.exists():
        return
    try:
        before = json.loads(path.read_text())
        what = (f"of {Path(before['checkpoint']).name} (epoch {before['epoch']}) on the {before['split']} split, "
                f"accuracy {before['accuracy']:.4f}")
    except (ValueError, KeyError, TypeError):
        what = "of an unknown checkpoint"
    raise UserError(f"{path.parent} already holds an evaluation {what} ({path.name}); pass --overwrite to replace "
                    f"it, or --out DIR to keep both")


def _title(run: RunDir, test: ShardSet, which: str, classifier: TrainedClassifier, tta: bool) -> str:
    """What was evaluated, for the figures: run, split, checkpoint, test-time augmentation."""
    chosen = which if which in ("best", "latest") else "given"
    augment = "D4 test-time augmentation (8 views)" if tta else "no test-time augmentation"
    return (f"{run}: {test.split} split of {test.root.name}, {chosen} checkpoint {Path(classifier.checkpoint).name} "
            f"(epoch {classifier.state.epoch}), {augment}")


def _predict_split(classifier: TrainedClassifier, test: ShardSet, tta: bool):
    """(images, labels, votes, probs) of the whole split on rank 0 (None elsewhere); every rank predicts its share."""
    start, stop = dist.share(test.n)
    part = test.read(start, stop, ("images", "labels", "vote_fractions"))
    probs = classifier(part["images"], tta)
    gathered = dist.gather_object((part["images"], part["labels"], part["vote_fractions"], probs))
    if gathered is None:
        return None, None, None, None
    return tuple(np.concatenate([g[i] for g in gathered]) for i in range(4))


def _metrics(labels, probs, names, run: RunDir, test: ShardSet, classifier: TrainedClassifier, tta: bool) -> dict:
    labels = labels.astype(np.int64)
    preds = probs.argmax(axis=1)
    out = classification_metrics(labels, preds, names)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    out["loss"] = float(-np.log(picked).mean()) if len(labels) else float("nan")
    out.update(tta=tta, checkpoint=classifier.checkpoint, checkpoint_sha256=classifier.sha256,
               epoch=classifier.state.epoch, split=test.split, dataset=str(test.root), warnings=_warnings(run, out))
    for text in out["warnings"]:
        log.warning(text)
    return out


def _warnings(run: RunDir, metrics: dict) -> list[str]:
    """The run's training warnings (e.g. a class missing from training) plus classes absent here."""
    found = []
    if run.metrics.is_file():
        found += json.loads(run.metrics.read_text()).get("warnings", [])
    found += [f"class '{name}' has no samples in this split; its recall and F1 are reported as 0"
              for name, row in metrics["per_class"].items() if row["support"] == 0]
    return found


def _plots(out: Path, suffix: str, metrics: dict, title: str, pixels, labels, probs, names, run: RunDir) -> dict:
    """The evaluation figures (rank 0); returns {name: path} of those written."""
    figures = {f"confusion_matrix{suffix}": (classification.confusion, np.array(metrics["confusion_matrix"]), names,
                                             title),
               f"misclassified{suffix}": (images.misclassified, pixels, labels.astype(np.int64), probs, names, title)}
    if run.history.is_file():
        summary = json.loads(run.metrics.read_text()) if run.metrics.is_file() else {}
        figures["curves"] = (training.classifier_curves, run.history, str(run), summary.get("best_epoch"))
    written = {name: rundir.write_figure(out / f"{name}.png", *draw) for name, draw in figures.items()}
    return {name: str(path) for name, path in written.items() if path is not None}
