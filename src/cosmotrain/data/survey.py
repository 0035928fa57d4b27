"""Survey-like cut-outs of the galaxies ``population.draw`` describes, made as the Kaggle JPEGs were.

``render(p, size, rng, quality)`` draws each galaxy at twice the stored resolution over a
field of ``population.FIELD`` Petrosian R90 (the part of a Kaggle cut-out the ingest keeps):
bulge, disk (arms, bar, knots, lopsidedness), dust lane, a merger's companion and tidal
tails, neighbouring galaxies and foreground stars; then the seeing (a Gaussian PSF), sky
noise at the SDSS level per unit area, the SDSS colour-image asinh stretch (Lupton et al.
2004, colour-preserving), JPEG compression, and the ingest's bicubic resize to ``size``.

Maps are float32 [N, S, S] in display units of surface brightness (1 = ``MU_REF``
mag/arcsec²); RGB weights come from tints (0 red .. 1 blue, ``profiles.tint_rgb``).
"""
from __future__ import annotations

import io

import numpy as np
from scipy import ndimage, special

from cosmotrain.data import population
from cosmotrain.data.population import FIELD, MAX_NEIGHBOURS, MAX_STARS
from cosmotrain.data.profiles import BLUE, RED, elliptical_radius, galaxy_frame, sersic

OVERSAMPLE = 2        # rendered at twice the stored size, JPEG-compressed, then resized like the ingest
SOFTENING = 0.06      # asinh stretch: surface brightness well below this is shown linearly
PEDESTAL = 0.012      # sky level left in SDSS colour images, so noise shows on both sides of it
DUST_COLOUR = np.array([0.8, 1.0, 1.25], np.float32)  # optical depth in R, G, B relative to G
CHUNK = 40            # galaxies rendered at once (memory)


def render(p: dict, size: int, noise_key: list[int], quality: int = 75, lo: int = 0,
           hi: int | None = None) -> np.ndarray:
    """Images uint8 [hi-lo, size, size, 3] of galaxies ``lo:hi`` of ``p`` (``population.draw``).

    Galaxies are drawn ``CHUNK`` at a time; chunk ``c``'s sky noise comes from
    ``default_rng(noise_key + [c])``, so a galaxy's image does not depend on which others are drawn.
    """
    hi = len(p["kind"]) if hi is None else hi
    out = np.zeros((hi - lo, size, size, 3), np.uint8)
    for c in range(lo // CHUNK, -(-hi // CHUNK)):
        a, b = c * CHUNK, min((c + 1) * CHUNK, len(p["kind"]))
        part = {k: v[a:b] for k, v in p.items()}
        rng = np.random.default_rng([*noise_key, c])
        display = stretch(observe(flux_maps(part, OVERSAMPLE * size), part, OVERSAMPLE * size, rng))
        keep = range(max(a, lo), min(b, hi))
        out[keep.start - lo:keep.stop - lo] = [jpeg_resized(display[i - a], size, quality) for i in keep]
    return out


def flux_maps(p: dict, s: int) -> np.ndarray:
    """The field before the telescope: float32 [N, s, s, 3] surface brightness, stars as points."""
    ppr = s / FIELD  # pixels per R90
    u, v = galaxy_frame(s, p["x0"] * ppr, p["y0"] * ppr, p["pa"])
    lum = 2 * np.pi * (p["r50"] * ppr) ** 2 * 10 ** (-0.4 * (p["mu50"] - population.MU_REF))  # total light
    galaxy = Palette(len(lum), s)
    _galaxy(galaxy, u, v, p, ppr, lum)
    rgb = galaxy.rgb() * _dust(u, v, p, ppr)
    others = Palette(len(lum), s)
    _companion(others, u, v, p, ppr, lum)
    _neighbours(others, s, p, ppr)
    _stars(others, s, p, ppr)
    return rgb + others.rgb()


class Palette:
    """Coloured light accumulated as two maps, the red and the blue population (float32 [N,s,s] each).

    ``add(light, tint)`` adds ``light`` [N,s,s] of tint [N] (0 red .. 1 blue); ``rgb()`` gives
    float32 [N,s,s,3] with the RGB weights of ``profiles.tint_rgb``. Two maps instead of three
    channels per component: the tint is linear in the two populations.
    """

    def __init__(self, n: int, s: int):
        self.red = np.zeros((n, s, s), np.float32)
        self.blue = np.zeros((n, s, s), np.float32)

    def add(self, light: np.ndarray, tint, where: np.ndarray | None = None) -> None:
        t = np.clip(np.asarray(tint, np.float32), 0.0, 1.0)
        norm = 1.0 / ((1 - t)[:, None] * RED + t[:, None] * BLUE).mean(axis=1)
        idx = slice(None) if where is None else where
        self.red[idx] += light * _col((1 - t) * norm)
        self.blue[idx] += light * _col(t * norm)

    def rgb(self) -> np.ndarray:
        return self.red[..., None] * RED + self.blue[..., None] * BLUE


def _col(x) -> np.ndarray:
    return np.asarray(x, np.float32)[:, None, None]


def _sersic_total(n: np.ndarray, r_eff: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total light (float64 [N]) of Sérsic profiles that are 1 at ``r_eff`` (pixels), axis ratio ``q``."""
    b = population.sersic_b(n)
    return 2 * np.pi * n * r_eff ** 2 * q * np.exp(b) * b ** (-2 * n) * special.gamma(2 * n)


def _sersic_map(u, v, n, r_eff, q, flux) -> np.ndarray:
    """A Sérsic profile (float32 [N,s,s]) of total light ``flux`` [N] in the frame (u, v)."""
    light = sersic(elliptical_radius(u, v, q), n, r_eff)
    return light * _col(flux / _sersic_total(n, r_eff, q))


def _galaxy(out: Palette, u, v, p: dict, ppr: float, lum: np.ndarray) -> None:
    """The main galaxy into ``out``: bulge, disk (smooth and arms), bar and knots."""
    h = p["h"] * ppr
    out.add(_sersic_map(u, v, p["n_b"], np.maximum(p["re_b"] * ppr, 0.3), p["q_b"], p["bt"] * lum), p["t_bulge"])
    cos_i = np.maximum(p["cos_i"], 0.05)
    ud, vd = u, v / _col(cos_i)  # the disk plane
    radius, theta = np.sqrt(ud * ud + vd * vd + 0.25), np.arctan2(vd, ud)
    disk = np.exp(-elliptical_radius(u, v, p["q_disk"]) / _col(h))
    disk *= 1 + _col(p["lopsided"]) * np.cos(theta - _col(p["lop_angle"]))
    disk *= _col((1 - p["bt"]) * lum / (2 * np.pi * h ** 2 * p["q_disk"]))
    smooth, arms = _arm_modulation(radius, theta, p, h)
    out.add(disk * smooth, p["t_disk"])
    out.add(disk * arms, p["t_arm"])
    barred = np.flatnonzero(p["bar"] > 0)
    if len(barred):
        q = {k: v[barred] for k, v in p.items()}
        out.add(_bar(ud[barred], vd[barred], q, h[barred]) * _col((1 - q["bt"]) * lum[barred]),
                0.5 * (q["t_bulge"] + q["t_disk"]), barred)
    knotty = np.flatnonzero(p["n_clumps"] > 0)
    if len(knotty):
        q = {k: v[knotty] for k, v in p.items()}
        out.add(_knots(u[knotty], v[knotty], q, h[knotty], cos_i[knotty]) * _col(lum[knotty]), q["t_arm"], knotty)


def _arm_modulation(radius, theta, p: dict, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(smooth, arm) factors (float32 [N,s,s] each) that split the disk: light = disk x (smooth + arm).

    Logarithmic arms θ = ±ln(R/h)/tan(pitch) + phase; ``arm_amp`` 0 (none) .. 0.92 (grand
    design) is the share of the disk light moved into them outside the centre; low
    ``coherence`` breaks them into flocculent fragments (``_patches``).
    """
    wind = _col(p["winding"]) * np.log(radius / _col(h)) / _col(np.tan(p["pitch"]))
    wave = 0.5 * (1.0 + np.cos(_col(p["arms"]) * (theta - wind) + _col(p["arm_phase"])))
    sharp = _col(p["arm_sharp"])
    ridge = wave ** sharp * (sharp + 1.0)  # mean about 1
    coherence = _col(p["coherence"])
    ridge = ridge * (coherence + (1 - coherence) * _patches(radius, theta, p))
    taper = _col(p["arm_amp"]) * (1.0 - np.exp(-(radius / (0.7 * _col(h))) ** 2))
    return 1.0 - taper, taper * ridge


def _patches(radius, theta, p: dict) -> np.ndarray:
    """A smooth positive random field of mean about 1 in the disk plane (flocculent fragments).

    Deterministic in the galaxy's parameters: a sum of a few polar waves whose phases come
    from ``arm_phase``, so no random numbers are drawn here.
    """
    phase = _col(p["arm_phase"])
    field = np.zeros_like(radius)
    for k, (m, kr) in enumerate(((3, 1.7), (5, 2.9), (7, 4.1), (4, 5.3))):
        field += np.cos(m * theta + kr * np.log(radius + 1.0) * 3.0 + phase * (k + 2.3))
    return np.exp(0.7 * field / 2.0 - 0.25)


def _bar(ud, vd, p: dict, h: np.ndarray) -> np.ndarray:
    """A bar (float32 [N,s,s]) in the disk plane, total light ``bar_frac`` of the disk."""
    a, c, s = _col(p["bar_len"] * h), _col(np.cos(p["bar_angle"])), _col(np.sin(p["bar_angle"]))
    x, y = ud * c + vd * s, -ud * s + vd * c
    shape = np.exp(-((x / a) ** 2 + (y / (a * _col(p["bar_q"]))) ** 2) ** 2)
    return shape / np.maximum(shape.sum(axis=(1, 2), keepdims=True), 1e-6) * _col(p["bar_frac"])


def _knots(u, v, p: dict, h: np.ndarray, cos_i: np.ndarray) -> np.ndarray:
    """Star-forming knots (float32 [N,s,s]): small Gaussians in the disk plane, fluxes in total light."""
    out = np.zeros_like(u)
    for k in range(int(p["n_clumps"].max())):
        on = _col(p["n_clumps"] > k)
        r, t = p[f"clump{k}_r"] * h, p[f"clump{k}_t"]
        sigma = _col(np.maximum(p[f"clump{k}_s"] * h, 0.6))
        d2 = (u - _col(r * np.cos(t))) ** 2 + (v - _col(r * np.sin(t) * cos_i)) ** 2
        out += on * np.exp(-d2 / (2 * sigma ** 2)) * _col(p[f"clump{k}_f"]) / (2 * np.pi * sigma ** 2)
    return out


def _dust(u, v, p: dict, ppr: float) -> np.ndarray:
    """Transmission (float32 [N,s,s,3]) of a dust lane along the mid-plane of inclined disks."""
    h = p["h"] * ppr
    edge = np.clip((0.45 - p["cos_i"]) / 0.35, 0, 1)
    width = np.maximum(0.35 * p["q0"] * h, 0.5)
    lane = np.exp(-((v - _col(0.4 * width * p["cos_i"] / 0.45)) / _col(width)) ** 2) * np.exp(-np.abs(u) / _col(3 * h))
    tau = _col(1.6 * p["dust"] * edge)[..., None] * DUST_COLOUR
    return np.exp(-tau * lane[..., None])


def _companion(out: Palette, u, v, p: dict, ppr: float, lum: np.ndarray) -> None:
    """A merging companion and tidal tails into ``out`` (nothing unless a merger)."""
    merging = np.flatnonzero(p["comp_flux"] > 0)
    if not len(merging):
        return
    q = {k: v[merging] for k, v in p.items()}
    u, v, lum = u[merging], v[merging], lum[merging]
    d, a = q["comp_dist"] * ppr, q["comp_angle"]
    cu, cv = u - _col(d * np.cos(a)), v - _col(d * np.sin(a))
    c, s = _col(np.cos(q["comp_pa"])), _col(np.sin(q["comp_pa"]))
    re = np.maximum(q["comp_re"] * q["r50"] * ppr, 0.5)
    out.add(_sersic_map(cu * c + cv * s, -cu * s + cv * c, q["comp_n"], re, q["comp_q"], q["comp_flux"] * lum),
            q["comp_tint"], merging)
    radius, theta = np.sqrt(u * u + v * v + 0.25), np.arctan2(v, u)
    h = _col(1.3 * q["h"] * ppr)
    wind = np.log(radius / h) / _col(np.tan(q["tail_pitch"]))
    tails = np.exp(-radius / h) * (0.5 * (1 + np.cos(2 * (theta - wind) + _col(q["comp_angle"])))) ** 4
    tails *= _col(q["tail_amp"] * lum) / np.maximum(tails.sum(axis=(1, 2), keepdims=True), 1e-6)
    out.add(tails, q["t_disk"], merging)


def _neighbours(out: Palette, s: int, p: dict, ppr: float) -> None:
    """Other galaxies in the cut-out into ``out``: Sérsic profiles at their own surface brightness."""
    for k in range(MAX_NEIGHBOURS):
        on = np.flatnonzero(p["n_neighbours"] > k)
        if not len(on):
            continue
        q = {name: p[f"nb{k}_{name}"][on] for name in ("x", "y", "re", "n", "q", "pa", "mu", "tint")}
        u, v = galaxy_frame(s, q["x"] * ppr, q["y"] * ppr, q["pa"])
        b = population.sersic_b(q["n"])
        mean_over_ie = 2 * q["n"] * np.exp(b) * b ** (-2 * q["n"]) * special.gamma(2 * q["n"])
        light = sersic(elliptical_radius(u, v, q["q"]), q["n"], np.maximum(q["re"] * ppr, 0.4))
        out.add(light * _col(10 ** (-0.4 * (q["mu"] - population.MU_REF)) / mean_over_ie), q["tint"], on)


def _stars(out: Palette, s: int, p: dict, ppr: float) -> None:
    """Foreground stars into ``out``, as points whose peak after the PSF is ``star{k}_peak``."""
    sigma = np.maximum(p["fwhm"] * ppr / 2.355, 0.5)
    for k in range(MAX_STARS):
        on = np.flatnonzero(p["n_stars"] > k)
        x = np.clip(np.rint(p[f"star{k}_x"][on] * ppr + (s - 1) / 2), 0, s - 1).astype(int)
        y = np.clip(np.rint(p[f"star{k}_y"][on] * ppr + (s - 1) / 2), 0, s - 1).astype(int)
        point = np.zeros((len(on), s, s), np.float32)
        point[np.arange(len(on)), y, x] = p[f"star{k}_peak"][on] * 2 * np.pi * sigma[on] ** 2
        out.add(point, p[f"star{k}_tint"][on], on)


def observe(flux: np.ndarray, p: dict, s: int, rng: np.random.Generator) -> np.ndarray:
    """The seeing and the sky: PSF-blurred ``flux`` [N,s,s,3] plus a pedestal and sky noise.

    The noise per pixel is SDSS's per 0.396" pixel scaled to this pixel's area, so a galaxy
    small in arcsec (large pixels in arcsec) is less noisy per pixel but blurrier.
    """
    sigma_psf = np.maximum(p["fwhm"] * s / FIELD / 2.355, 0.3)
    blurred = np.empty_like(flux)
    for i, sigma in enumerate(sigma_psf):  # light falling off the edge is lost, as on a detector
        ndimage.gaussian_filter(flux[i], (sigma, sigma, 0), output=blurred[i], mode="constant", truncate=3.5)
    pixel_arcsec = FIELD * p["r90_arcsec"] / s
    noise = 10 ** (-0.4 * (population.SKY_NOISE_MU - population.MU_REF)) * population.SDSS_PIXEL / pixel_arcsec
    blurred += PEDESTAL + rng.standard_normal(blurred.shape, dtype=np.float32) * _col(noise)[..., None]
    return blurred


def stretch(rgb: np.ndarray) -> np.ndarray:
    """uint8 colour images (same shape) of surface brightness ``rgb`` [..., 3]: the SDSS asinh stretch.

    Lupton et al. (2004): every channel is multiplied by asinh(I/β)/asinh(1/β)/I, with I the
    mean of the channels, so colours survive in bright cores; a pixel whose brightest channel
    passes 1 is scaled down as a whole.
    """
    intensity = rgb.mean(axis=-1, keepdims=True)
    limit = 1.0 / (SOFTENING * np.arcsinh(1.0 / SOFTENING))
    safe = np.where(np.abs(intensity) > 1e-6, intensity, 1.0)
    gain = np.where(np.abs(intensity) > 1e-6, np.arcsinh(safe / SOFTENING) / np.arcsinh(1 / SOFTENING) / safe, limit)
    shown = np.clip(rgb * gain, 0.0, None)
    shown /= np.maximum(shown.max(axis=-1, keepdims=True), 1.0)
    return np.rint(shown * 255.0).astype(np.uint8)


def jpeg_resized(image: np.ndarray, size: int, quality: int) -> np.ndarray:
    """``image`` (uint8 [s,s,3]) through JPEG at ``quality``, resized to ``size`` as the ingest does (bicubic)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
