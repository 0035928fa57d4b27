"""Synthetic galaxies of three morphological classes, rendered like survey cut-outs.

The generator draws galaxies of the three Galaxy Zoo classes with known labels:

* ``0`` round:   a Sérsic spheroid (index 1.5–4), axis ratio 0.75–1;
* ``1`` edge-on: a thin exponential disk (axis ratio 0.1–0.3), a small bulge, often a dust lane;
* ``2`` spiral:  a nearly face-on exponential disk (axis ratio 0.7–1) with 2–4 logarithmic
  arms (pitch 12°–30°, either winding sense) and a bulge.

Every galaxy gets a random size, position, position angle, brightness and colour, a Gaussian
PSF, up to three foreground stars and Gaussian sky noise, then an asinh stretch to uint8 (as
SDSS colour JPEGs are made). Colours overlap broadly between the classes (spheroids and bulges
a little redder, arms a little bluer, as in real galaxies), so the class is in the shape, not
in a colour a linear model could pick up.

Galaxy ``i`` of seed ``s`` depends on ``(s, i)`` only: galaxies are made in blocks of
``BLOCK`` whose random numbers come from ``default_rng([s, block])``, and labels are
``i % 3``. Any range can therefore be rendered on its own (one per MPI rank) and the result
is the same whatever the split; the first ``k`` galaxies of ``n > k`` equal those of ``k``.

Lengths are in pixels of a 64-pixel image and scale with the image size; fluxes are in units
where 1 is the top of the uint8 stretch.
"""
from __future__ import annotations

import numpy as np

CLASS_NAMES = ("round", "edge-on", "spiral")
BLOCK = 240  # galaxies drawn from one random stream; a multiple of 3

REFERENCE_SIZE = 64  # lengths below are pixels of a 64x64 image
RED = np.array([1.0, 0.78, 0.58], dtype=np.float32)   # RGB weights of an old stellar population
BLUE = np.array([0.66, 0.82, 1.0], dtype=np.float32)  # and of a young one
STRETCH = 0.08      # asinh softening: fluxes well below this are shown linearly
SKY_LEVEL = 0.02    # sky background, so that noise is visible on both sides of it
MAX_STARS = 3
BULGE_B = 2.0 * 2.0 - 1.0 / 3.0 + 4.0 / (405.0 * 2.0)  # Sérsic b_n of the n = 2 bulges
# parameters that are lengths in pixels of a 64-pixel image, scaled with the image size
_LENGTHS = {"x0", "y0", "psf", "r_eff", "h_disk", "bulge_r"}


# ---------------------------------------------------------------- labels and splits

def synthetic_labels(ids: np.ndarray) -> np.ndarray:
    """Class of synthetic galaxy ``ids`` (int [N]): ``ids % 3`` as int8 [N], so classes are balanced."""
    return (np.asarray(ids) % 3).astype(np.int8)


# ---------------------------------------------------------------- parameters

def draw_parameters(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Random shape, light and observing parameters of ``n`` galaxies (each a float [n] array).

    Every parameter is drawn for every galaxy whatever its class, so a block's random stream
    does not depend on its labels. Lengths in 64-pixel-image pixels, angles in radians.
    """
    def u(lo, hi):
        return rng.uniform(lo, hi, n)

    p = {
        "x0": u(-3.0, 3.0), "y0": u(-3.0, 3.0), "pa": u(0.0, np.pi),
        "peak": np.exp(u(np.log(0.35), np.log(1.2))),  # brightest pixel, before the stretch
        "tint": u(0.0, 1.0),                            # 0 red .. 1 blue
        "psf": u(0.6, 1.3),                             # Gaussian sigma
        "noise": u(0.006, 0.025),                       # sky noise per pixel and channel
        # round: Sérsic spheroid
        "sersic_n": u(1.5, 4.0), "r_eff": u(3.0, 9.0), "q_round": u(0.75, 1.0),
        # disks (edge-on and spiral)
        "h_disk": u(4.0, 8.5), "q_edge": u(0.1, 0.3), "q_face": u(0.7, 1.0),
        "bulge_r": u(1.0, 2.5), "bulge_amp": u(0.15, 0.6), "dust": u(-0.4, 0.7).clip(0.0, None),
        # spiral arms
        "arms": rng.integers(2, 5, n).astype(np.float64), "pitch": np.deg2rad(u(12.0, 30.0)),
        "winding": rng.choice([-1.0, 1.0], n), "arm_phase": u(0.0, 2 * np.pi),
        "arm_amp": u(0.65, 0.95), "arm_sharp": u(1.5, 3.0),
        # foreground stars, positions in units of the half-width
        "n_stars": np.minimum(rng.poisson(0.8, n), MAX_STARS).astype(np.float64),
    }
    for k in range(MAX_STARS):
        p[f"star{k}_x"], p[f"star{k}_y"] = u(-0.9, 0.9), u(-0.9, 0.9)
        p[f"star{k}_flux"], p[f"star{k}_tint"] = np.exp(u(np.log(0.05), np.log(0.8))), u(0.0, 1.0)
    return p


def tint_rgb(tint: np.ndarray) -> np.ndarray:
    """RGB weights (float32 [N,3], mean 1) of colours ``tint`` (float [N], 0 red .. 1 blue)."""
    t = np.clip(np.asarray(tint, dtype=np.float32), 0.0, 1.0)[:, None]
    rgb = (1.0 - t) * RED + t * BLUE
    return rgb / rgb.mean(axis=1, keepdims=True)


# ---------------------------------------------------------------- light profiles

def galaxy_frame(size: int, x0: np.ndarray, y0: np.ndarray, pa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (float32 [N,size,size] each, pixels) along and across each galaxy's major axis.

    ``x0, y0`` (float [N], pixels) offset the centre from the image centre; ``pa`` (float [N],
    radians) turns the major axis anticlockwise from the x axis.
    """
    axis = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    dx = axis[None, None, :] - np.asarray(x0, np.float32)[:, None, None]
    dy = axis[None, :, None] - np.asarray(y0, np.float32)[:, None, None]
    c = np.cos(pa).astype(np.float32)[:, None, None]
    s = np.sin(pa).astype(np.float32)[:, None, None]
    return dx * c + dy * s, -dx * s + dy * c


def sersic(r: np.ndarray, n: np.ndarray, r_eff: np.ndarray) -> np.ndarray:
    """Sérsic surface brightness (float32, same shape as ``r``), 1 at the effective radius.

    ``r`` [N,H,W] and ``r_eff`` [N] in pixels, ``n`` [N] the Sérsic index; b_n from Ciotti &
    Bertin (1999).
    """
    n = np.asarray(n, np.float32)[:, None, None]
    b = 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n)
    x = r / np.asarray(r_eff, np.float32)[:, None, None]
    return np.exp(-b * (x ** (1.0 / n) - 1.0)).astype(np.float32)


def exponential(r: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Exponential disk (float32, shape of ``r``), 1 at the centre; ``h`` [N] the scale length."""
    return np.exp(-r / np.asarray(h, np.float32)[:, None, None])


def elliptical_radius(u: np.ndarray, v: np.ndarray, q: np.ndarray, soft: float = 0.5) -> np.ndarray:
    """Radius (float32 [N,H,W], pixels) of ellipses of axis ratio ``q`` [N], softened by ``soft``."""
    vq = v / np.asarray(q, np.float32)[:, None, None]
    return np.sqrt(u * u + vq * vq + soft * soft)


def spiral_arms(u: np.ndarray, v: np.ndarray, p: dict) -> np.ndarray:
    """Arm modulation (float32 [N,H,W], mean about 1) of logarithmic spirals in a tilted disk.

    ``p`` holds the [N] parameters of ``draw_parameters``. In the disk plane (``u``, ``v / q``) an arm follows θ = ±ln(R/h) / tan(pitch) + const;
    ``m`` arms are the maxima of cos(m (θ ∓ ln(R/h)/tan(pitch)) + phase), sharpened by a power.
    The modulation fades towards the centre, where the bulge dominates.
    """
    def col(name):
        return np.asarray(p[name], np.float32)[:, None, None]

    vq = v / col("q_face")
    radius = np.sqrt(u * u + vq * vq + 0.25)
    theta = np.arctan2(vq, u)
    wind = col("winding") * np.log(radius / col("h_disk")) / np.tan(col("pitch"))
    wave = 0.5 * (1.0 + np.cos(col("arms") * (theta - wind) + col("arm_phase")))
    sharp = col("arm_sharp")
    ridge = wave ** sharp * (sharp + 1.0)  # the mean of wave**s is about 1/(s+1)
    taper = col("arm_amp") * (1.0 - np.exp(-(radius / (0.6 * col("h_disk"))) ** 2))
    return (1.0 - taper) + taper * ridge


# ---------------------------------------------------------------- one class at a time

def render_round(size: int, p: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Light components (map float32 [N,S,S], tint float [N]) of round galaxies."""
    u, v = galaxy_frame(size, p["x0"], p["y0"], p["pa"])
    r = elliptical_radius(u, v, p["q_round"])
    return [(sersic(r, p["sersic_n"], p["r_eff"]), p["tint"] - 0.15)]


def render_edge_on(size: int, p: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Light components of edge-on disks: a thin disk cut by a dust lane, and a small bulge."""
    u, v = galaxy_frame(size, p["x0"], p["y0"], p["pa"])
    disk = exponential(elliptical_radius(u, v, p["q_edge"]), p["h_disk"])
    lane_width = (0.35 * p["q_edge"] * p["h_disk"]).astype(np.float32)[:, None, None]
    disk = disk * (1.0 - p["dust"].astype(np.float32)[:, None, None] * np.exp(-(v / lane_width) ** 2))
    bulge = _bulge(u, v, p, q=0.7)
    return [(disk, p["tint"]), (bulge, p["tint"] - 0.3)]


def render_spiral(size: int, p: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    """Light components of face-on spirals: an armed disk (bluer arms) and a bulge."""
    u, v = galaxy_frame(size, p["x0"], p["y0"], p["pa"])
    disk = exponential(elliptical_radius(u, v, p["q_face"]), p["h_disk"])
    arms = spiral_arms(u, v, p)
    return [(disk * arms, p["tint"] + 0.15), (_bulge(u, v, p, q=0.9), p["tint"] - 0.3)]


def _bulge(u: np.ndarray, v: np.ndarray, p: dict, q: float) -> np.ndarray:
    """A Sérsic n = 2 bulge (float32 [N,S,S]) of axis ratio ``q``, central brightness ``bulge_amp``."""
    r = elliptical_radius(u, v, np.full(len(u), q))
    centre = np.exp(BULGE_B).astype(np.float32)  # a Sérsic profile is exp(b_n) at r = 0
    return sersic(r, np.full(len(u), 2.0), p["bulge_r"]) * (p["bulge_amp"].astype(np.float32) / centre)[
        :, None, None]


RENDERERS = (render_round, render_edge_on, render_spiral)


def compose(components: list[tuple[np.ndarray, np.ndarray]], psf: np.ndarray) -> np.ndarray:
    """Sum of coloured, PSF-blurred components: float32 [N,S,S,3].

    ``components`` are (map float32 [N,S,S], tint float [N]) pairs; ``psf`` [N] is the
    Gaussian sigma in pixels. Blurring each map before colouring it is the same as blurring
    the colour image (the blur is linear) and cheaper.
    """
    out = None
    for light, tint in components:
        term = gaussian_blur(light, psf)[..., None] * tint_rgb(tint)[:, None, None, :]
        out = term if out is None else out + term
    return out


def gaussian_kernels(size: int, sigma: np.ndarray) -> np.ndarray:
    """1-D Gaussian blur matrices (float32 [N,size,size]), one per ``sigma`` [N] (pixels).

    Row ``i`` holds the weights of output pixel ``i``; each Gaussian is normalised over the
    whole line, so light falling off the image edge is lost, as on a real detector.
    """
    offsets = np.arange(size, dtype=np.float32)
    d2 = (offsets[:, None] - offsets[None, :]) ** 2
    s2 = (2.0 * np.asarray(sigma, np.float32) ** 2)[:, None, None]
    line = np.arange(-size, size + 1, dtype=np.float32) ** 2
    norm = np.exp(-line[None, :] / s2[:, :, 0]).sum(axis=1)[:, None, None]
    return np.exp(-d2[None] / s2) / norm


def gaussian_blur(maps: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Each map (float32 [N,H,H]) convolved with a circular Gaussian of its own ``sigma`` [N] (pixels)."""
    kernels = gaussian_kernels(maps.shape[1], sigma)
    return np.matmul(np.matmul(kernels, maps), kernels.transpose(0, 2, 1))


def stars(size: int, p: dict, scale: float) -> np.ndarray:
    """Foreground stars (float32 [N,S,S,3]): PSF-shaped point sources, fluxes relative to the peak."""
    axis = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    half = size / 2.0
    two_s2 = (2.0 * (p["psf"] * scale) ** 2).astype(np.float32)[:, None]
    out = np.zeros((len(p["psf"]), size, size, 3), np.float32)
    for k in range(MAX_STARS):
        on = np.flatnonzero(p["n_stars"] > k)
        if not len(on):
            continue
        gx = np.exp(-(axis[None, :] - (p[f"star{k}_x"][on] * half).astype(np.float32)[:, None]) ** 2 / two_s2[on])
        gy = np.exp(-(axis[None, :] - (p[f"star{k}_y"][on] * half).astype(np.float32)[:, None]) ** 2 / two_s2[on])
        amp = (p[f"star{k}_flux"][on] * p["peak"][on]).astype(np.float32)[:, None, None]
        spot = amp * gy[:, :, None] * gx[:, None, :]
        out[on] += spot[..., None] * tint_rgb(p[f"star{k}_tint"][on])[:, None, None, :]
    return out


def asinh_stretch(flux: np.ndarray) -> np.ndarray:
    """uint8 image (same shape) of ``flux`` (float): asinh stretch with flux 1 at 255, clipped."""
    scaled = np.arcsinh(flux / STRETCH) / np.arcsinh(1.0 / STRETCH)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def render(labels: np.ndarray, p: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """Images (uint8 [N,size,size,3]) of galaxies of class ``labels`` (int [N]) and parameters ``p``.

    ``rng`` supplies the sky noise. Each galaxy is scaled so its brightest pixel after the PSF
    is ``p["peak"]``, then stars, sky and noise are added and the asinh stretch applied.
    """
    scale = size / REFERENCE_SIZE
    scaled = {k: (v * scale if k in _LENGTHS else v) for k, v in p.items()}
    flux = np.zeros((len(labels), size, size, 3), np.float32)
    for c, renderer in enumerate(RENDERERS):
        sel = np.flatnonzero(labels == c)
        if len(sel):
            flux[sel] = compose(renderer(size, {k: v[sel] for k, v in scaled.items()}), scaled["psf"][sel])
    flux *= (p["peak"] / flux.mean(axis=3).max(axis=(1, 2))).astype(np.float32)[:, None, None, None]
    flux += stars(size, p, scale) + SKY_LEVEL
    flux += rng.standard_normal(flux.shape, dtype=np.float32) * p["noise"].astype(np.float32)[:, None, None, None]
    return asinh_stretch(flux)


# ---------------------------------------------------------------- the generator

def render_block(seed: int, block: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Galaxies ``block*BLOCK .. (block+1)*BLOCK - 1`` of ``seed``: images uint8 [BLOCK,S,S,3], labels int8."""
    rng = np.random.default_rng([seed, block])
    labels = synthetic_labels(np.arange(block * BLOCK, (block + 1) * BLOCK))
    params = draw_parameters(rng, BLOCK)
    return render(labels, params, size, rng), labels


def synthetic_galaxies(start: int, stop: int, seed: int, size: int = 64, progress=None) -> dict[str, np.ndarray]:
    """Synthetic galaxies ``start .. stop-1`` of ``seed`` as the galaxies dataset's fields.

    Returns ``images`` uint8 [N,S,S,3], ``labels`` int8 [N] (0 round, 1 edge-on, 2 spiral),
    ``vote_fractions`` float32 [N,3] (one-hot: every "vote" for the true class) and ``ids``
    int64 [N] (``start .. stop-1``). ``progress``, if given, is called with the number of
    galaxies finished after each block.
    """
    images, labels = [], []
    first, last = start // BLOCK, -(-stop // BLOCK) if stop > start else start // BLOCK
    for block in range(first, last):
        lo, hi = max(start, block * BLOCK) - block * BLOCK, min(stop, (block + 1) * BLOCK) - block * BLOCK
        block_images, block_labels = render_block(seed, block, size)
        images.append(block_images[lo:hi])
        labels.append(block_labels[lo:hi])
        if progress is not None:
            progress(hi - lo)
    images_all = np.concatenate(images) if images else np.zeros((0, size, size, 3), np.uint8)
    labels_all = np.concatenate(labels) if labels else np.zeros(0, np.int8)
    return {"images": images_all, "labels": labels_all,
            "vote_fractions": np.eye(3, dtype=np.float32)[labels_all],
            "ids": np.arange(start, stop, dtype=np.int64)}
