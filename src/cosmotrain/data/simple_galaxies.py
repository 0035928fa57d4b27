"""The first synthetic-galaxy generator (``synthetic.generator: simple``), kept for comparison.

It draws galaxies of the three Galaxy Zoo classes with known labels:

* ``0`` round:   a Sérsic spheroid (index 1.5–4), axis ratio 0.75–1;
* ``1`` edge-on: a thin exponential disk (axis ratio 0.1–0.3), a small bulge, often a dust lane;
* ``2`` spiral:  a nearly face-on exponential disk (axis ratio 0.7–1) with 2–4 logarithmic
  arms (pitch 12°–30°, either winding sense) and a bulge.

Every galaxy gets a random size, position, position angle, brightness and colour, a Gaussian
PSF, up to three foreground stars and Gaussian sky noise, then an asinh stretch to uint8 (as
SDSS colour JPEGs are made). Colours overlap broadly between the classes (spheroids and bulges
a little redder, arms a little bluer, as in real galaxies), so the class is in the shape, not
in a colour a linear model could pick up.

Every galaxy is kept (its one-hot "votes" all go to its class); labels are ``i % 3``.
The rendering is unchanged since the generator became ``simple``: the same seed gives the
same images, bit for bit.

Lengths are in pixels of a 64-pixel image and scale with the image size; fluxes are in units
where 1 is the top of the uint8 stretch.
"""
from __future__ import annotations

import numpy as np

from cosmotrain.data.profiles import (elliptical_radius, exponential, galaxy_frame, gaussian_blur, sersic,
                                      tint_rgb)

REFERENCE_SIZE = 64  # lengths below are pixels of a 64x64 image
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


# ---------------------------------------------------------------- light profiles

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

def render_block(seed: int, block: int, first: int, n: int, size: int = 64) -> dict[str, np.ndarray]:
    """Galaxies ``first .. first+n-1`` (block ``block`` of seed ``seed``) as dataset fields.

    ``images`` uint8 [n,S,S,3], ``labels`` int8 [n] (``id % 3``) and ``vote_fractions``
    float32 [n,3] (one-hot: every "vote" for the true class). ``n`` must be a multiple of 3.
    """
    rng = np.random.default_rng([seed, block])
    labels = synthetic_labels(np.arange(first, first + n))
    params = draw_parameters(rng, n)
    return {"images": render(labels, params, size, rng), "labels": labels,
            "vote_fractions": np.eye(3, dtype=np.float32)[labels]}
