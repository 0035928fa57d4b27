"""DCGAN networks, the μK transform, and the checks a GAN run makes on its dataset."""
import numpy as np
import pytest
import tensorflow as tf

from cosmotrain import config
from cosmotrain.data import reader, shards
from cosmotrain.errors import UserError
from cosmotrain.models.dcgan import (IsotropicFilter, ModelConfig, build_discriminator, build_generator, input_dim,
                                     upsamplings)
from cosmotrain.models import generator
from cosmotrain.train import gan, gan_monitor
from cosmotrain.train.gan_config import GanConfig
from testlib import resign


def test_generator_and_discriminator_shapes_at_64_pixels():
    cfg = ModelConfig(g_filters=64, d_filters=8)
    g, d = build_generator(cfg), build_discriminator(cfg)
    z = np.random.default_rng(0).standard_normal((3, cfg.latent_dim)).astype(np.float32)
    patches = g(z, training=False).numpy()
    assert patches.shape == (3, 64, 64)
    assert np.all(np.abs(patches) <= 1.0)  # tanh output
    assert d(patches, training=False).numpy().shape == (3, 1)
    assert upsamplings(cfg) == 4  # 4 -> 8 -> 16 -> 32 -> 64


def test_sizes_come_from_the_config():
    cfg = ModelConfig(image_size=32, base_size=4, latent_dim=16, g_filters=32, d_filters=8, output="linear")
    g, d = build_generator(cfg), build_discriminator(cfg)
    assert g.input_shape == (None, 16) and g.output_shape == (None, 32, 32)
    assert d.input_shape == (None, 32, 32) and d.output_shape == (None, 1)
    convs = [layer for layer in g.layers if "Conv2DTranspose" in type(layer).__name__]
    assert [c.strides for c in convs] == [(2, 2)] * 3


def test_an_image_size_that_is_not_base_times_a_power_of_two_is_refused():
    with pytest.raises(UserError, match="model.image_size 48"):
        build_generator(ModelConfig(image_size=48, base_size=5))


def test_the_transform_maps_uK_to_network_units_and_back():
    x = np.random.default_rng(1).normal(5.0, 100.0, (50, 8, 8))
    t = generator.Transform.fit(x, sigmas=3.0)
    assert t.offset_uK == pytest.approx(x.mean()) and t.scale_uK == pytest.approx(3 * x.std())
    assert np.allclose(t.to_uK(t.to_net(x)), x)
    assert abs(np.std(t.to_net(x)) - 1 / 3) < 1e-9


def write_cmb(root, side=32, n=64, attrs=None):
    rng = np.random.default_rng(0)
    patches = rng.normal(0, 100, (n, side, side)).astype(np.float32)
    attrs = {"nside": 256, "lmax": 1000, "fwhm_arcmin": 10.0, "reso_arcmin": 8.0, "cl_source": "test", "seed": 0} \
        if attrs is None else attrs
    shards.write_dataset(root, "cmb", {"train": {"patches": patches, "centers": np.zeros((n, 2)), "sky": np.zeros(n, np.int32)}}, attrs,
                         config={}, seed=0)
    return root


def gan_config(data, **sections):
    overrides = [f"data.path={data}", "model.image_size=64"]
    overrides += [f"{k}={v}" for k, v in sections.items()]
    return config.load(GanConfig, None, overrides)


def test_a_dataset_of_another_patch_size_is_refused_with_the_fix(tmp_path):
    data = write_cmb(tmp_path / "cmb32")
    with pytest.raises(UserError, match=r"32x32 patches but model.image_size is 64; pass --set model.image_size=32"):
        gan.open_data(gan_config(data))


def test_a_dataset_without_a_pixel_size_is_refused(tmp_path):
    data = write_cmb(tmp_path / "cmb", side=64, attrs={"nside": 256, "seed": 0})
    with pytest.raises(UserError, match="reso_arcmin"):
        gan.open_data(gan_config(data))


def test_a_dataset_without_a_validation_split_is_refused_with_the_fix(tmp_path):
    data = write_cmb(tmp_path / "cmb", side=64)
    with pytest.raises(UserError, match=r"no 'val' split .*make the dataset with splits.val > 0") as info:
        gan.open_data(gan_config(data))
    assert "\n" not in str(info.value)


def test_a_dataset_made_before_splits_went_by_sky_is_refused_with_the_fix(tmp_path):
    import h5py

    data = write_cmb(tmp_path / "cmb", side=64)
    for shard in data.glob("*.h5"):
        with h5py.File(shard, "r+") as h5:
            del h5["sky"]
    resign(data)  # as an old dataset would be: intact, only without the field
    with pytest.raises(UserError, match="lacks dataset 'sky'; regenerate the dataset") as info:
        gan.open_data(gan_config(data))
    assert "\n" not in str(info.value)


def test_a_galaxy_dataset_is_refused(tiny_galaxies):
    with pytest.raises(UserError, match="'galaxies' dataset"):
        gan.open_data(gan_config(tiny_galaxies))


def _random_filter(size, seed):
    layer = IsotropicFilter(size)
    layer(tf.zeros([1, 32, 32, 1]))
    layer.kernel.assign(np.random.default_rng(seed).standard_normal((size, size)).astype(np.float32))
    return layer


def test_the_output_filter_starts_as_the_identity():
    x = tf.random.stateless_normal([2, 32, 32, 1], [1, 2])
    np.testing.assert_allclose(IsotropicFilter(9)(x).numpy(), x.numpy(), atol=1e-5)


def test_the_output_filter_adds_no_preferred_direction():
    """Rotating or mirroring a patch and then filtering equals filtering and then rotating."""
    layer = _random_filter(7, seed=3)
    x = np.random.default_rng(4).standard_normal((2, 32, 32, 1)).astype(np.float32)
    y = layer(x).numpy()
    for turn in (lambda a: np.rot90(a, 1, axes=(1, 2)), lambda a: np.swapaxes(a, 1, 2), lambda a: a[:, ::-1]):
        np.testing.assert_allclose(layer(np.ascontiguousarray(turn(x))).numpy(), turn(y), atol=1e-3)


def test_the_output_filter_is_a_correlation_with_reflected_edges():
    layer = _random_filter(9, seed=5)
    x = tf.random.stateless_normal([2, 32, 32, 1], [6, 7])
    k = layer.STEP * layer.kernel.numpy()
    k[4, 4] += 1.0  # it starts as the identity
    turns = [k, k.T]
    turns += [t[::-1] for t in turns]
    turns += [t[:, ::-1] for t in turns]
    symmetric = (sum(turns) / 8).astype(np.float32)[:, :, None, None]
    direct = tf.nn.conv2d(tf.pad(x, [[0, 0], [4, 4], [4, 4], [0, 0]], mode="REFLECT"), symmetric, 1, "VALID")
    np.testing.assert_allclose(layer(x).numpy(), direct.numpy(), atol=1e-4)


def test_a_generator_with_an_output_filter_makes_patches():
    cfg = ModelConfig(g_filters=32, d_filters=8, upsample="resize-nearest", output_kernel=3, output_filter=9)
    g = build_generator(cfg)
    assert g.get_layer("spectrum_filter").count_params() == 81
    assert g(np.zeros((2, cfg.latent_dim), np.float32), training=False).shape == (2, 64, 64)


def test_an_even_output_filter_is_refused_naming_the_key():
    with pytest.raises(UserError, match="model.output_filter"):  # when the config is read, before any work
        ModelConfig(upsample="resize-nearest", output_kernel=3, output_filter=8)


@pytest.mark.parametrize("minibatch_std", [False, True])
def test_only_the_minibatch_std_channel_lets_d_see_how_much_the_rest_of_its_batch_scatters(minibatch_std):
    """A patch's logit changes when the other patches of its batch get louder, with the channel only."""
    cfg = ModelConfig(image_size=32, d_filters=8, kernel=3, d_minibatch_std=minibatch_std)
    D = build_discriminator(cfg)
    batch = np.random.default_rng(3).normal(0, 0.2, (8, 32, 32)).astype(np.float32)
    louder = batch.copy()
    louder[1:] *= 3.0
    first, again = D(batch, training=False)[0, 0], D(louder, training=False)[0, 0]
    assert (abs(float(first) - float(again)) > 1e-4 * abs(float(first))) == minibatch_std
    assert D.output_shape == (None, 1)


def test_the_monitors_real_patches_are_drawn_one_by_one_from_the_whole_split(tmp_path):
    """Neighbouring patches share their sky; a reference of a few blocks of neighbours is not fair.

    Each patch holds its own index, so the drawn patches show where they came from.
    """
    n, block = 2048, 64
    patches = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 4, 4)).copy()
    attrs = {"nside": 256, "lmax": 1000, "fwhm_arcmin": 10.0, "reso_arcmin": 8.0, "cl_source": "test", "seed": 0}
    shards.write_dataset(tmp_path / "cmb", "cmb", {"train": {"patches": patches, "centers": np.zeros((n, 2)), "sky": np.zeros(n, np.int32)}}, attrs,
                         config={}, seed=0, samples_per_shard=700)
    split = reader.ShardSet(tmp_path / "cmb", "train", kind="cmb")
    drawn = gan_monitor.real_patches(split, 512, seed=2024)
    index = drawn[:, 0, 0].astype(int)
    assert np.all(drawn == index[:, None, None].astype(np.float32))  # whole patches, each where it was drawn
    assert len(set(index)) == 512
    assert len(set(index // block)) >= 28  # 8 blocks of 64 would touch 8 of the 32
    assert np.any(np.diff(index) < 0)  # in random order: the reference (the first ones) is no corner of the set
    np.testing.assert_array_equal(gan_monitor.real_patches(split, 512, seed=2024), drawn)


def test_the_output_beam_suppresses_pixel_scale_power_like_a_gaussian_beam():
    """A 2.5-pixel FWHM beam keeps a constant and the large scales, and all but removes a pixel-grid pattern."""
    from cosmotrain.models.dcgan import Beam
    beam, side = Beam(2.5), 64
    assert np.allclose(beam(np.full((1, side, side, 1), 3.0, np.float32)).numpy(), 3.0, atol=1e-5)
    checker = np.fromfunction(lambda i, j: np.cos(np.pi * i) * np.cos(np.pi * j), (side, side))  # the Nyquist corner
    out = beam(checker[None, :, :, None].astype(np.float32)).numpy()[0, 8:-8, 8:-8, 0]
    assert np.std(out) < 1e-3 * np.std(checker)  # a 10' beam on 4' pixels: ~1e-4 of the amplitude
    wave = np.fromfunction(lambda i, j: np.cos(2 * np.pi * 2 * i / side), (side, side))  # 2 fundamentals
    kept = beam(wave[None, :, :, None].astype(np.float32)).numpy()[0, 8:-8, 8:-8, 0]
    sigma, k = 2.5 / np.sqrt(8 * np.log(2)), 2 * np.pi * 2 / side  # pixels, radians per pixel
    assert np.std(kept) == pytest.approx(np.exp(-0.5 * (sigma * k) ** 2) * np.std(wave[8:-8, 8:-8]), rel=0.005)
    assert not Beam(2.5).trainable_weights


def test_a_generator_with_the_output_beam_makes_smooth_patches():
    cfg = ModelConfig(image_size=32, latent_dim=8, g_filters=32, d_filters=8, kernel=3, upsample="resize-nearest",
                      output_kernel=3, output_beam=2.5)
    patches = build_generator(cfg)(np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)).numpy()
    power = np.abs(np.fft.fft2(patches - patches.mean(axis=(1, 2), keepdims=True))) ** 2
    assert power[:, 16, 16].mean() < 1e-4 * power[:, 1:4, 1:4].mean()  # the Nyquist corner is beamed away


def test_a_beam_too_wide_for_the_patch_is_refused_naming_the_key():
    with pytest.raises(UserError, match="model.output_beam"):
        ModelConfig(image_size=32, output_beam=9.0)


def test_spectral_normalisation_keeps_each_layer_of_d_at_unit_gain():
    cfg = ModelConfig(image_size=32, latent_dim=8, g_filters=32, d_filters=8, kernel=3, d_batchnorm=False,
                      d_spectral_norm=True)
    d = build_discriminator(cfg)
    big = [v for v in d.trainable_variables if "kernel" in v.name]
    for v in big:
        v.assign(v * 50.0)  # far from unit gain
    for _ in range(30):  # one power iteration per training call
        d(np.zeros((2, 32, 32), np.float32), training=True)
    for v in big:
        matrix = v.numpy().reshape(-1, v.shape[-1])
        assert np.linalg.svd(matrix, compute_uv=False)[0] == pytest.approx(1.0, rel=0.05), v.name


def test_noise_inputs_are_part_of_the_latent_vector_and_start_silent():
    """With model.noise_inputs, G's latent vector carries a white-noise map per upsampled grid: a patch still
    depends on its own latent vector only, and the noise moves it once its weight is not 0."""
    from cosmotrain.models.dcgan import input_dim, noise_sides
    cfg = ModelConfig(image_size=32, latent_dim=8, g_filters=32, d_filters=8, kernel=3, upsample="resize-nearest",
                      output_kernel=3, output="linear", noise_inputs=True)
    assert noise_sides(cfg) == [8, 16, 32] and input_dim(cfg) == 8 + 64 + 256 + 1024
    g = build_generator(cfg)
    z = np.random.default_rng(0).standard_normal((4, input_dim(cfg))).astype(np.float32)
    other = z.copy()
    other[:, 8:] = np.random.default_rng(1).standard_normal((4, input_dim(cfg) - 8))
    np.testing.assert_array_equal(g(z[:2], training=False).numpy(), g(z, training=False).numpy()[:2])
    np.testing.assert_allclose(g(other, training=False).numpy(), g(z, training=False).numpy(), atol=1e-6)  # weights 0
    for layer in g.layers:
        if layer.name.endswith("_noise"):
            layer.scale.assign(tf.ones_like(layer.scale))
    assert np.abs(g(other, training=False).numpy() - g(z, training=False).numpy()).max() > 1e-3


def test_the_spectrum_path_of_d_reads_the_patch_ring_powers():
    """model.d_spectrum hands D log10 of the patch's ring powers as science.rings measures them (mean removed)."""
    from cosmotrain.models.dcgan import RingSpectrum
    from cosmotrain.science import rings
    x = np.random.default_rng(4).standard_normal((3, 32, 32)).astype(np.float32) + 5.0
    expected = rings.patch_ring_powers(x - x.mean(axis=(1, 2), keepdims=True), rings.ring_matrix(32, 16))
    got = RingSpectrum(32)(tf.constant(x)).numpy()
    np.testing.assert_allclose(got[:, 1:], np.log10(expected[:, 1:]), atol=1e-4)
    cfg = ModelConfig(image_size=32, latent_dim=8, g_filters=32, d_filters=8, kernel=3, d_spectrum=16)
    d = build_discriminator(cfg)
    assert d.get_layer("spectrum_dense").output_shape == (None, 16) and d(x).shape == (3, 1)


def test_ring_gains_scale_each_ring_of_the_patch_without_wrapping_its_edges():
    """model.ring_gains: a cosine of the patch's own cosine transform (no jump at the edges once mirrored) comes
    out scaled by exactly its ring's gain; the layer starts as the identity."""
    from cosmotrain.models.dcgan import RingGains
    layer, side = RingGains(32), 32
    i = np.arange(side)[:, None] + 0.5
    wave = np.cos(np.pi * 16 * i / side) * np.ones((1, side))  # 16 half-fundamentals: ring 8
    smooth = np.random.default_rng(5).standard_normal((2, side, side)).cumsum(axis=1).cumsum(axis=2)
    x = np.stack([wave, *smooth])[..., None].astype(np.float32)
    np.testing.assert_allclose(layer(x).numpy(), x, atol=1e-3 * np.abs(x).max())
    layer.log_gain.assign(np.log(np.where(np.arange(17) == 8, 1.5, 1.0)).astype(np.float32))
    np.testing.assert_allclose(layer(x).numpy()[0, ..., 0], 1.5 * wave, atol=1e-4)
    cfg = ModelConfig(image_size=32, latent_dim=8, g_filters=32, d_filters=8, kernel=3, output="linear",
                      ring_gains=True)
    assert build_generator(cfg).get_layer("ring_gains").log_gain.shape == (17,)


def test_a_ring_gain_rate_scales_how_far_one_weight_moves_a_gain():
    """model.ring_gain_rate r: a gain is exp(r × weight), so one Adam step of a weight moves it r times as far."""
    from cosmotrain.models.dcgan import RingGains
    x = np.random.default_rng(6).standard_normal((1, 32, 32, 1)).astype(np.float32)
    slow, fast = RingGains(32), RingGains(32, rate=20.0)
    for layer in (slow, fast):
        layer(x)
        layer.log_gain.assign(np.full(17, 0.01, np.float32))
    np.testing.assert_allclose(slow(x).numpy(), np.exp(0.01) * x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast(x).numpy(), np.exp(0.2) * x, rtol=1e-4, atol=1e-5)
    with pytest.raises(UserError, match="model.ring_gain_rate"):
        ModelConfig(image_size=32, ring_gains=True, ring_gain_rate=0.0)


def test_a_zero_sum_output_convolution_starts_g_without_an_offset_common_to_every_patch():
    """model.output_zero_sum: the ReLU maps' positive mean times the last kernel's sum is a patch-wide offset
    shared by every sample; with taps summing to 0 G starts without it, whatever the seed."""
    sizes = dict(image_size=32, latent_dim=8, g_filters=32, d_filters=8, kernel=3, upsample="resize-nearest",
                 output_kernel=3, output="linear")
    z = np.random.default_rng(7).standard_normal((256, 8)).astype(np.float32)

    def common_share(zero_sum: bool, seed: int) -> float:
        tf.keras.utils.set_random_seed(seed)
        x = build_generator(ModelConfig(**sizes, output_zero_sum=zero_sum))(z, training=True).numpy()
        return float(x.mean(axis=0).mean() ** 2 / np.mean(x ** 2))

    shares = [common_share(False, seed) for seed in range(6)]
    assert max(shares) > 0.2  # some seeds start with most of their variance in one offset
    assert max(common_share(True, seed) for seed in range(6)) < 0.02
    with pytest.raises(UserError, match="model.output_zero_sum needs model.output_kernel"):
        ModelConfig(image_size=32, output_zero_sum=True)


def test_padded_by_mirror_or_wrap_g_draws_no_frame_along_its_canvas_edges():
    """model.g_padding: from a first map that is the same everywhere, G with reflect or wrap padding makes a canvas
    that is the same everywhere (zero padding: a frame along the edges); wrapped, rolling that map by one cell
    rolls the whole canvas by 2^k pixels (a torus, no place special)."""
    sizes = dict(image_size=32, latent_dim=8, base_size=5, margin=4, g_filters=32, d_filters=8, kernel=3,
                 upsample="resize-nearest", output_kernel=3, output="linear", ring_gains=True, output_beam=2.0)
    rng = np.random.default_rng(3)
    flat = np.broadcast_to(rng.standard_normal((4, 1, 1, 32)), (4, 5, 5, 32)).astype(np.float32)
    first = rng.standard_normal((4, 5, 5, 32)).astype(np.float32)

    def canvas(padding: str):
        tf.keras.utils.set_random_seed(5)
        g = build_generator(ModelConfig(**sizes, g_padding=padding))
        return tf.keras.Model(g.get_layer("to_map").output, g.get_layer("beam").output)

    def frame(padding: str) -> float:
        x = canvas(padding)(flat).numpy()
        return float(x.std(axis=(1, 2)).max() / np.abs(x).mean())

    assert frame("zero") > 0.1
    assert frame("reflect") < 1e-4 and frame("wrap") < 1e-4
    torus = canvas("wrap")
    rolled = torus(np.roll(first, 1, axis=2)).numpy()
    assert np.abs(rolled - np.roll(torus(first).numpy(), 8, axis=2)).max() < 1e-4 * rolled.std()
    with pytest.raises(UserError, match="model.g_padding 'wrap' needs a margin"):
        ModelConfig(image_size=32, upsample="resize-nearest", g_padding="wrap")
    with pytest.raises(UserError, match="model.g_padding 'reflect' needs upsample resize"):
        ModelConfig(image_size=32, g_padding="reflect")


def test_a_margin_makes_g_draw_a_wider_canvas_and_hand_over_its_centre():
    """model.margin: G's last map is the patch plus margin pixels on every side (base_size · 2^k), cropped back
    to image_size; D still reads image_size; sizes that make no canvas are refused naming the key."""
    cfg = ModelConfig(image_size=32, latent_dim=8, base_size=5, margin=4, g_filters=32, d_filters=8, kernel=3,
                      upsample="resize-nearest", output_kernel=3, output="linear", ring_gains=True)
    g, d = build_generator(cfg), build_discriminator(cfg)
    assert g.get_layer("to_patch").output_shape == (None, 40, 40, 1)
    assert g.get_layer("ring_gains").log_gain.shape == (21,)
    patch = g(tf.random.normal((2, 8)))
    assert patch.shape == (2, 32, 32) and d(patch).shape == (2, 1)
    with pytest.raises(UserError, match="model.margin = 38 is not model.base_size 5"):
        ModelConfig(image_size=32, margin=3, base_size=5)
    with pytest.raises(UserError, match="model.margin"):
        ModelConfig(image_size=32, margin=16)


def test_a_random_crop_cuts_the_patch_where_two_latent_numbers_say():
    """model.crop=random: z has two more numbers; 0 cuts the centre (as crop=centre does), ±4 the corners."""
    sizes = dict(image_size=32, latent_dim=8, base_size=5, margin=4, g_filters=32, d_filters=8, kernel=3,
                 upsample="resize-nearest", output_kernel=3, output="linear")
    centre, random = build_generator(ModelConfig(**sizes)), build_generator(ModelConfig(**sizes, crop="random"))
    random.set_weights(centre.get_weights())
    assert input_dim(ModelConfig(**sizes, crop="random")) == 10
    z = tf.random.normal((3, 8), seed=1)
    canvas = tf.keras.Model(centre.input, centre.get_layer("to_patch").output)(z)[..., 0].numpy()
    place = lambda u: random(tf.concat([z, tf.fill((3, 2), u)], axis=1)).numpy()
    np.testing.assert_array_equal(place(0.0), centre(z).numpy())
    np.testing.assert_array_equal(place(-4.0), canvas[:, :32, :32])
    np.testing.assert_array_equal(place(4.0), canvas[:, 8:, 8:])
    near = build_generator(ModelConfig(**sizes, crop="random", crop_reach=1))  # at most 1 pixel off the centre
    near.set_weights(centre.get_weights())
    np.testing.assert_array_equal(near(tf.concat([z, tf.fill((3, 2), -4.0)], axis=1)).numpy(), canvas[:, 3:35, 3:35])
    np.testing.assert_array_equal(near(tf.concat([z, tf.fill((3, 2), 4.0)], axis=1)).numpy(), canvas[:, 5:37, 5:37])
    with pytest.raises(UserError, match="'random' needs model.margin > 0"):
        ModelConfig(image_size=32, crop="random")
    for reach, crop in ((5, "random"), (0, "random"), (2, "centre")):
        with pytest.raises(UserError, match="model.crop_reach must be 1 … model.margin"):
            ModelConfig(**sizes, crop=crop, crop_reach=reach)


def test_a_sign_flip_negates_the_patch_where_its_own_latent_number_is_negative():
    """model.sign_flip: z's last number; the rest of z (here with a random crop before it) makes the same patch."""
    sizes = dict(image_size=32, latent_dim=8, base_size=5, margin=4, g_filters=32, d_filters=8, kernel=3,
                 upsample="resize-nearest", output_kernel=3, output="linear", crop="random")
    plain, flipped = build_generator(ModelConfig(**sizes)), build_generator(ModelConfig(**sizes, sign_flip=True))
    flipped.set_weights(plain.get_weights())
    assert input_dim(ModelConfig(**sizes, sign_flip=True)) == input_dim(ModelConfig(**sizes)) + 1 == 11
    z = tf.random.normal((4, 10), seed=2)
    sign = tf.constant([[0.3], [-0.3], [2.0], [-1e-3]])
    out, own = flipped(tf.concat([z, sign], axis=1)).numpy(), plain(z).numpy()
    np.testing.assert_array_equal(out, own * np.array([1, -1, 1, -1])[:, None, None])
    assert np.abs(own).max() > 0
