"""`cosmotrain bench galaxy-baselines`: how far simple morphology numbers get on the kept galaxies.

Makes the demo's synthetic galaxies (6000 of ``configs/galaxies.yaml``, its seed and
generator; ``--set`` changes any key, e.g. ``synthetic.generator=simple`` for the first
generator; ``--quick``: 2400) or reads ``--data DATASET`` (a galaxies dataset, e.g. the Kaggle
ingest), splits them as ``data galaxies`` does, measures every kept galaxy
(``science.morphology``: size R50, R90, concentration R90/R50, axis ratio, colour, colour
gradient, segment radius) and scores, on the kept test galaxies:

* each feature alone (the majority class in each of 16 quantile bins of the training set);
* the best two-threshold rule a person would write (``stump_pair``);
* a multinomial logistic regression on all the features (and, beside it, on their products).

    ratio = the best of the single features and the logistic regression   (target <= 0.80)

These are statistics, not timings: any machine gives the same numbers. The vote-fraction
RMSE of the split's mean fractions (what a model must beat) is reported too.
"""
from __future__ import annotations

import time

import numpy as np

from cosmotrain import config
from cosmotrain.errors import UserError

TARGET = 0.80
FULL, QUICK = 6000, 2400  # galaxies made (the demo's count; the quick count)
REQUIRED = ("size", "concentration", "axis_ratio", "colour", "logistic_regression")  # what the target bounds


def run(args) -> dict:
    """Make or read the galaxies, measure, score; returns the figures ``bench.report`` prints and saves."""
    start = time.perf_counter()
    fields, source = _galaxies(args)
    scores = baseline_scores(fields["images"], fields["labels"], fields["split"])
    test = fields["split"] == 2
    mean_rmse = float(np.sqrt(np.mean((fields["vote_fractions"][test] - fields["vote_fractions"][test].mean(0)) ** 2)))
    ratio = max(scores["accuracy"][k] for k in REQUIRED)
    return {"ratio": ratio, "target": TARGET, "higher_is_better": False, "met": ratio <= TARGET,
            **scores, "vote_rmse_of_mean_test": mean_rmse, "source": source,
            "seconds": round(time.perf_counter() - start, 1)}


def _galaxies(args) -> tuple[dict, dict]:
    """{images, labels, vote_fractions, split (0 train, 1 val, 2 test)} and where they came from."""
    data = getattr(args, "data", None)
    if data:
        return _read_dataset(data), {"dataset": str(data)}
    from cosmotrain.data import galaxies
    from cosmotrain.data.galaxy_dataset import SPLITS, GalaxiesConfig, stratified_split

    cfg = config.load(GalaxiesConfig, config.shipped("galaxies.yaml"), args.overrides)
    n = QUICK if args.quick else FULL
    fields = galaxies.synthetic_galaxies(0, n, cfg.dataset.seed, cfg.dataset.image_size,
                                         generator=cfg.synthetic.generator, threshold=cfg.galaxy_zoo.threshold,
                                         quality=cfg.synthetic.jpeg_quality)
    split = np.zeros(n, np.int8)
    for code, name in enumerate(SPLITS):
        split[stratified_split(fields["labels"], cfg.dataset.splits, cfg.dataset.seed)[name]] = code
    return {**fields, "split": split}, {"synthetic": n, "generator": cfg.synthetic.generator,
                                        "seed": cfg.dataset.seed, "threshold": cfg.galaxy_zoo.threshold}


def _read_dataset(root: str) -> dict:
    from cosmotrain.data.reader import ShardSet

    parts = []
    for code, name in enumerate(("train", "val", "test")):
        split = ShardSet(root, name, kind="galaxies")
        part = split.read(0, split.n, ("images", "labels", "vote_fractions"))
        parts.append({**part, "split": np.full(split.n, code, np.int8)})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def baseline_scores(images: np.ndarray, labels: np.ndarray, split: np.ndarray) -> dict:
    """Test accuracy of every baseline, trained on the kept train galaxies, scored on the kept test ones.

    ``images`` uint8 [N, H, W, 3], ``labels`` int [N] (-1: no class kept), ``split`` int [N]
    (0 train, 1 val, 2 test). Returns {"accuracy": {baseline: float}, "rule": the two-threshold
    rule, "n_train", "n_test", "test_class_counts", "features_medians"}.
    """
    from cosmotrain.science import morphology

    train, test = (split == 0) & (labels >= 0), (split == 2) & (labels >= 0)
    if train.sum() < 30 or len(np.unique(labels[test])) < 2:
        raise UserError(f"{int(train.sum())} kept training and {int(test.sum())} kept test galaxies are too few "
                        f"for the baselines; use more galaxies")
    features = morphology.measure(images[train | test])
    x = np.nan_to_num(np.stack([features[k] for k in morphology.FEATURES], axis=1), nan=0.0)
    y = labels[train | test].astype(np.int64)
    is_train = train[train | test]
    xtr, ytr, xte, yte = x[is_train], y[is_train], x[~is_train], y[~is_train]
    accuracy = {name: float(np.mean(morphology.binned_rule(xtr[:, i], ytr, xte[:, i]) == yte))
                for i, name in enumerate(morphology.FEATURES)}
    pair, rule = morphology.stump_pair(xtr, ytr, xte)
    accuracy["two_thresholds"] = float(np.mean(pair == yte))
    accuracy["logistic_regression"] = float(np.mean(morphology.LogisticRegression().fit(xtr, ytr).predict(xte) == yte))
    quadratic = _products(xtr, xtr), _products(xte, xtr)
    accuracy["logistic_regression_products"] = float(np.mean(
        morphology.LogisticRegression().fit(quadratic[0], ytr).predict(quadratic[1]) == yte))
    rule.update(feature_a=morphology.FEATURES[rule["feature_a"]], feature_b=morphology.FEATURES[rule["feature_b"]])
    medians = {name: [float(np.median(x[y == c, i])) for c in range(3)] for i, name in enumerate(morphology.FEATURES)}
    return {"accuracy": accuracy, "rule": rule, "n_train": int(train.sum()), "n_test": int(test.sum()),
            "test_class_counts": np.bincount(yte, minlength=3).tolist(), "feature_medians_by_class": medians}


def _products(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The features and all their pairwise products (float64 [N, F + F(F+1)/2]), standardised as ``reference``."""
    z = (x - reference.mean(axis=0)) / (reference.std(axis=0) + 1e-12)
    return np.hstack([z] + [z[:, [i]] * z[:, i:] for i in range(z.shape[1])])
