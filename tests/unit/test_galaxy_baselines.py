"""The survey-like galaxies are not solved by simple morphology numbers (the issue's difficulty bar)."""
import argparse

import numpy as np
import pytest

from cosmotrain.bench import galaxy_baselines
from cosmotrain.science import morphology


@pytest.fixture(scope="module")
def bench():
    """The benchmark as `cosmotrain bench galaxy-baselines` runs it: the demo's 6000 galaxies (seed 0).

    The full size, not --quick: on 2400 galaxies the kept test set holds 123 galaxies, and the
    logistic regression's accuracy scatters by +-0.04 (0.77 and 0.82 on two versions of it).
    """
    return galaxy_baselines.run(argparse.Namespace(quick=False, overrides=[], data=None))


def test_simple_baselines_stay_at_or_below_80_percent_on_the_kept_test_galaxies(bench):
    acc = bench["accuracy"]
    for name in galaxy_baselines.REQUIRED + ("two_thresholds",):
        assert acc[name] <= 0.80, (name, acc[name])
    assert bench["met"] and bench["ratio"] == max(acc[k] for k in galaxy_baselines.REQUIRED)
    assert acc["logistic_regression"] > 0.5  # the features carry signal: the task is hard, not random
    assert bench["n_test"] > 250 and min(bench["test_class_counts"]) > 60


def test_size_no_longer_separates_spirals_from_round_galaxies(bench):
    # the old generator drew spirals at 13.0 px and spheroids at 7.5 px (size alone: ~0.8 on two classes)
    assert bench["accuracy"]["size"] < 0.5


def test_the_simple_generator_is_solved_by_the_same_baselines():
    """The baselines do measure: on the first generator they reach what the issue reported (>= 0.9)."""
    from cosmotrain.data import galaxies

    data = galaxies.synthetic_galaxies(0, 900, seed=0, generator="simple")
    split = np.where(np.arange(900) < 720, 0, 2)
    scores = galaxy_baselines.baseline_scores(data["images"], data["labels"], split)
    assert scores["accuracy"]["logistic_regression"] >= 0.9


def test_morphology_measures_a_known_ellipse():
    y, x = np.indices((64, 64)) - 31.5
    light = np.exp(-np.hypot(x / 8.0, y / 4.0))  # axis ratio 0.5, exponential
    image = np.repeat((20 + 200 * light)[..., None], 3, axis=2).astype(np.uint8)
    m = morphology.measure(image[None])
    assert m["axis_ratio"][0] == pytest.approx(0.5, abs=0.08)
    assert abs(m["colour"][0]) < 0.01 and 2.0 < m["concentration"][0] < 3.5
