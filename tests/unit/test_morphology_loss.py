"""G's optional morphology term: the referee's Minkowski functionals, made smooth, and how they pull."""
import numpy as np
import pytest
import tensorflow as tf

from cosmotrain.config import ConfigError
from cosmotrain.science import stats
from cosmotrain.science.referee_features import THRESHOLDS
from cosmotrain.train import gan_config, morphology_loss


def smooth_field(n, size=48, beam=2.0, seed=0):
    """n patches of a Gaussian random field smoothed by a Gaussian beam of ``beam`` pixels σ (float32)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(size) * 2 * np.pi
    transfer = np.exp(-0.5 * beam**2 * (k[:, None] ** 2 + k[None, :] ** 2))
    return np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, size, size))) * transfer).real.astype(np.float32)


def spotty(fields):
    """The same fields with their hot spots sharpened: a positively skewed, non-Gaussian sky."""
    u = fields / fields.std(axis=(1, 2), keepdims=True)
    return np.exp(0.6 * u).astype(np.float32)


def match(real):
    return morphology_loss.MorphologyMatch(*morphology_loss.reference(real))


def test_the_smooth_functionals_are_the_referees():
    x = smooth_field(64)
    smooth = morphology_loss.functionals(x).numpy().mean(axis=0)
    u = (x - x.mean(axis=(1, 2), keepdims=True)) / x.std(axis=(1, 2), keepdims=True)
    referee = stats.minkowski_functionals(u, np.array(THRESHOLDS), sigma=1.0, mean=0.0).reshape(len(x), -1).mean(axis=0)
    scale = np.abs(referee).reshape(3, -1).max(axis=1).repeat(len(THRESHOLDS))  # each functional's own size
    assert np.max(np.abs(smooth - referee) / scale) < 0.02, (smooth, referee)  # 0.1 σ and SOFT 1e-3: 0.027


def test_a_real_batch_scores_about_zero_and_a_spotty_one_far_more():
    term = match(smooth_field(1024, seed=1))
    real = [float(term(smooth_field(32, seed=100 + i))) for i in range(40)]
    fake = [float(term(spotty(smooth_field(32, seed=200 + i)))) for i in range(10)]
    noise = np.std(real) / np.sqrt(len(real))
    assert abs(np.mean(real)) < 3 * noise + 0.01
    assert min(fake) > np.mean(real) + 10 * np.std(real)


def test_its_gradient_moves_a_spotty_batch_towards_the_real_morphology():
    term = match(smooth_field(1024, seed=1))
    patches = tf.Variable(spotty(smooth_field(32, seed=7)))
    before = float(term(patches))
    optimizer = tf.keras.optimizers.Adam(0.02)
    for _ in range(120):  # the δ of WIDTH 0.06 σ is sharp: M falls to 0.12 × in 60 steps, 0.07 × in 120
        with tf.GradientTape() as tape:
            loss = term(patches)
        grad = tape.gradient(loss, patches)
        assert np.all(np.isfinite(grad.numpy()))
        optimizer.apply_gradients([(grad, patches)])
    assert float(term(patches)) < 0.1 * before


@pytest.mark.parametrize("weight", [-1.0, float("nan")])
def test_a_negative_weight_is_refused(weight):
    with pytest.raises(ConfigError, match="morphology_weight must be >= 0"):
        gan_config.TrainConfig(morphology_weight=weight)
