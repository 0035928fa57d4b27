"""The classifier model, its configs and the evaluation arithmetic, in one process."""
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from cosmotrain import config  # noqa: E402
from cosmotrain.config import ConfigError  # noqa: E402
from cosmotrain.checkpoints import TrainState  # noqa: E402
from cosmotrain.evaluate_classifier import classification_metrics, confusion_matrix  # noqa: E402
from cosmotrain.inference import TrainedClassifier  # noqa: E402
from cosmotrain.models.classifier import ModelConfig, build_classifier  # noqa: E402
from cosmotrain.train.classifier import ClassifierConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["classifier.yaml", "classifier_tiny.yaml"])
def test_shipped_configs_load(name):
    cfg = config.load(ClassifierConfig, REPO / "configs" / name)
    assert cfg.train.epochs >= 1 and cfg.model.filters


def test_model_follows_its_config_and_outputs_probabilities():
    cfg = ModelConfig(filters=(4, 8, 8), convs_per_block=2, dense=(16, 8), batch_norm=True)
    model = build_classifier(cfg, (32, 32, 3))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 6 and kinds.count("BatchNormalization") == 6
    assert kinds.count("MaxPooling2D") == 3 and kinds.count("StepDropout") == 2
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    probs = model(images, training=False).numpy()
    assert probs.shape == (5, 3)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_batch_norm_moving_statistics_follow_the_configured_momentum():
    """With momentum m, one training call moves the moving mean (0) a fraction 1 - m towards the batch mean."""
    images = np.full((4, 16, 16, 3), 200, np.uint8)
    moved = {}
    for momentum in (0.99, 0.9):
        tf.keras.utils.set_random_seed(0)
        model = build_classifier(ModelConfig(filters=(4,), dense=(), batch_norm=True, batch_norm_momentum=momentum),
                                 (16, 16, 3))
        model(images, training=True)
        moved[momentum] = float(np.abs(model.get_layer("bn0_0").moving_mean.numpy()).sum())
    assert moved[0.9] == pytest.approx(10 * moved[0.99], rel=1e-3) and moved[0.99] > 0


def test_global_average_head_accepts_other_image_sizes():
    model = build_classifier(ModelConfig(filters=(4,), head="global_avg", dense=()), (24, 24, 3))
    assert model.output_shape == (None, 3)


def test_too_many_poolings_for_the_images_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="pooling blocks shrink 16-pixel images"):
        build_classifier(ModelConfig(filters=(4, 4, 4, 4, 4)), (16, 16, 3))


@pytest.mark.parametrize("override, message", [
    ("model.dropout=1.0", "model.dropout"),
    ("model.batch_norm_momentum=1.0", "model.batch_norm_momentum"),
    ("model.activation=relux", "model.activation"),
    ("model.filters=[]", "model.filters"),
    ("optimizer.base_lr=-0.1", "optimizer.base_lr"),
    ("optimizer.beta_1=1.5", "optimizer.beta_1"),
    ("optimizer.final_lr_fraction=2", "final_lr_fraction"),
])
def test_impossible_settings_fail_when_the_config_is_read(override, message):
    from cosmotrain import config
    from cosmotrain.train.classifier import ClassifierConfig

    with pytest.raises(ConfigError, match=message):
        config.load(ClassifierConfig, None, [override])


def test_metrics_from_a_small_confusion():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    preds = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    cm = confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    m = classification_metrics(labels, preds, ["round", "edge-on", "spiral"])
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["per_class"]["round"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["edge-on"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["spiral"]["recall"] == pytest.approx(2 / 3)


def test_an_absent_class_scores_zero_instead_of_nan():
    m = classification_metrics(np.array([0, 1]), np.array([0, 1]), ["round", "edge-on", "spiral"])
    assert m["per_class"]["spiral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["accuracy"] == 1.0


def test_tta_averages_the_eight_rotations_and_flips():
    model = build_classifier(ModelConfig(filters=(4,), dense=(8,)), (8, 8, 3))
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    views = [np.rot90(images, k, axes=(1, 2)) for k in range(4)]
    views += [v[:, :, ::-1] for v in views]
    expected = np.mean([model(np.ascontiguousarray(v), training=False).numpy() for v in views], axis=0)
    classifier = TrainedClassifier(model, ["round", "edge-on", "spiral"], "", "", TrainState())
    assert np.allclose(classifier(images, tta=True, batch=2), expected, atol=1e-6)
    assert np.allclose(classifier(images, tta=False), model(images, training=False).numpy(), atol=1e-6)
