"""`cosmotrain data cmb`: a sharded dataset of simulated CMB patches, the same on 1 or N MPI ranks.

``make_dataset`` reads the input spectrum (``cmb_spectrum``), checks the whole config before
any map is made (``check_config``), then in rounds: rank r simulates map k·size + r
(``sky.simulate_map``) and cuts its patches, rank 0 gathers them into per-split arrays;
finally rank 0 writes the shards, the input spectrum (``cl_input.txt``), the manifest and
``examples.png``. Which patch goes to which split is a seeded shuffle of all patches
(``split_assignment``), independent of the rank count.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from cosmotrain import config, dist, logs, rundir
from cosmotrain.data import shards
from cosmotrain.data.cmb_spectrum import INPUT_FILE, Spectrum, SpectrumConfig, load_spectrum, write_spectrum
from cosmotrain.data.reader import ShardSet
from cosmotrain.data.shards import split_counts
from cosmotrain.data.sky import (cut_patches, min_separation_deg, patch_centers, patch_half_diagonal_deg,
                                 patch_pixels, pixel_arcmin, simulate_map)
from cosmotrain.errors import UserError
from cosmotrain.plots import images
from cosmotrain.science.spectra import pixel_window

KIND = "cmb"
MAX_PATCH_DEG = 30.0  # larger patches are too curved for the flat-sky estimator

log = logs.get("cmb")

# ---------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class MapsConfig:
    """Full-sky maps: count, HEALPix resolution, band limit, beam, pixel window, noise."""

    n_maps: int = 8
    nside: int = 1024
    lmax: Optional[int] = None  # default: min(3·nside − 1, the spectrum's ℓmax)
    fwhm_arcmin: float = 10.0
    pixwin: bool = True
    noise_uk_arcmin: float = 0.0


@dataclasses.dataclass(frozen=True)
class PatchesConfig:
    """Patch grid and where patches are cut."""

    shape: tuple[int, ...] = (64, 64)
    reso_arcmin: float = 4.0
    centers_nside: int = 8
    b_min_deg: float = 20.0


@dataclasses.dataclass(frozen=True)
class SplitsConfig:
    """Fractions of all patches in each split (a seeded shuffle decides which)."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    samples_per_shard: int = 4096
    example_patches: int = 16  # shown in DIR/examples.png


@dataclasses.dataclass(frozen=True)
class CmbConfig:
    seed: int = 0
    spectrum: SpectrumConfig = SpectrumConfig()
    maps: MapsConfig = MapsConfig()
    patches: PatchesConfig = PatchesConfig()
    splits: SplitsConfig = SplitsConfig()
    output: OutputConfig = OutputConfig()


# ---------------------------------------------------------------- checks before any work

def resolve_lmax(maps: MapsConfig, spectrum: Spectrum) -> int:
    """The band limit: ``maps.lmax`` or min(3·nside − 1, spectrum ℓmax)."""
    return maps.lmax if maps.lmax is not None else min(3 * maps.nside - 1, spectrum.lmax)


def check_config(cfg: CmbConfig, spectrum: Spectrum) -> list[str]:
    """Raise UserError for a config that cannot work; return warnings for dubious ones.

    Everything here is cheap and runs before any map is made.
    """
    m, p = cfg.maps, cfg.patches
    _check_healpix(m, spectrum)
    shape = _check_patch_shape(p)
    centers = _check_centers(p, shape)
    _check_splits(cfg.splits, len(centers) * m.n_maps)
    warnings = []
    pix = pixel_arcmin(m.nside)
    if p.reso_arcmin < pix / 2.0:
        warnings.append(f"patch pixels of {p.reso_arcmin:g}' are much finer than the {pix:.2f}' map pixels of "
                        f"nside {m.nside}: neighbouring patch pixels repeat one map value; raise maps.nside to "
                        f"{_nside_for(p.reso_arcmin)} or patches.reso_arcmin to {pix:.1f}")
    if m.fwhm_arcmin < pix:
        warnings.append(f"a beam of {m.fwhm_arcmin:g}' FWHM is smaller than the {pix:.2f}' map pixels: the patches "
                        f"will be dominated by pixelisation at small scales; use maps.fwhm_arcmin >= {2 * pix:.1f}")
    return warnings


def _nside_for(reso_arcmin: float) -> int:
    nside = 1
    while pixel_arcmin(nside) > reso_arcmin:
        nside *= 2
    return nside


def _check_healpix(m: MapsConfig, spectrum: Spectrum) -> None:
    if m.nside < 1 or m.nside & (m.nside - 1) or m.nside > 8192:
        raise UserError(f"maps.nside = {m.nside} is not a power of two between 1 and 8192; use e.g. "
                        f"{max(1, 1 << max(0, int(m.nside).bit_length() - 1))}")
    lmax = resolve_lmax(m, spectrum)
    if lmax > 3 * m.nside - 1:
        raise UserError(f"maps.lmax = {lmax} exceeds 3·nside − 1 = {3 * m.nside - 1} for nside {m.nside}; "
                        f"lower maps.lmax or raise maps.nside")
    if lmax < 2:
        raise UserError(f"maps.lmax = {lmax} leaves no multipole to simulate; use maps.lmax >= 2")
    if lmax > spectrum.lmax:
        raise UserError(f"the spectrum {spectrum.source} stops at ℓ = {spectrum.lmax}, maps.lmax is {lmax}; lower "
                        f"maps.lmax or give a spectrum reaching ℓ = {lmax}")
    if m.n_maps < 1:
        raise UserError(f"maps.n_maps = {m.n_maps}; make at least 1 map")
    if m.fwhm_arcmin < 0 or m.noise_uk_arcmin < 0:
        raise UserError("maps.fwhm_arcmin and maps.noise_uk_arcmin must be >= 0")


def _check_patch_shape(p: PatchesConfig) -> tuple[int, int]:
    if len(p.shape) != 2 or min(p.shape) < 8:
        raise UserError(f"patches.shape = {list(p.shape)}; give two sizes of at least 8 pixels, e.g. [64, 64]")
    if p.reso_arcmin <= 0:
        raise UserError(f"patches.reso_arcmin = {p.reso_arcmin}; give a positive pixel size in arcmin")
    side = max(p.shape) * p.reso_arcmin / 60.0
    if side > MAX_PATCH_DEG:
        raise UserError(f"patches of {max(p.shape)} pixels of {p.reso_arcmin:g}' are {side:.1f}° wide, too large "
                        f"for a flat (gnomonic) patch; keep them under {MAX_PATCH_DEG:.0f}° (fewer or finer pixels)")
    return int(p.shape[0]), int(p.shape[1])


def _check_centers(p: PatchesConfig, shape: tuple[int, int]) -> np.ndarray:
    nc = p.centers_nside
    if nc < 1 or nc & (nc - 1):
        raise UserError(f"patches.centers_nside = {nc} is not a power of two; use e.g. 8")
    reach = patch_half_diagonal_deg(shape, p.reso_arcmin)
    centers = patch_centers(nc, p.b_min_deg, reach)
    if len(centers) == 0:
        raise UserError(f"no {shape[0]}x{shape[1]} patch ({reach:.1f}° centre to corner) fits outside "
                        f"|b| < {p.b_min_deg:g}° on the centres of nside {nc}; lower patches.b_min_deg")
    separation = min_separation_deg(centers)
    if separation < 2.0 * reach:
        need = 2.0 * reach / separation
        raise UserError(f"patches overlap: {shape[0]}x{shape[1]} pixels of {p.reso_arcmin:g}' reach {reach:.2f}° "
                        f"from their centre, but centres of nside {nc} are only {separation:.2f}° apart; lower "
                        f"patches.centers_nside to {max(1, nc // 2)} or make patches {need:.2f}x smaller")
    return centers


def _check_splits(s: SplitsConfig, n: int) -> None:
    fractions = (s.train, s.val, s.test)
    if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise UserError(f"splits train/val/test = {fractions} must be >= 0 and add up to 1")
    counts = split_counts(n, fractions)
    for name, f, c in zip(("train", "val", "test"), fractions, counts):
        if f > 0 and c == 0:
            raise UserError(f"split {name} would be empty with {n} patches in all; make more maps or "
                            f"raise splits.{name}")


# ---------------------------------------------------------------- splits

def split_assignment(n: int, fractions: tuple[float, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n`` patches (global index map·Nc + j): its split (int8) and position in it (int64).

    A seeded shuffle picks the members of each split; within a split patches keep their
    global order. Depends on (n, fractions, seed) only, never on the number of ranks.
    """
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(n)
    split = np.empty(n, np.int8)
    start = 0
    for k, count in enumerate(split_counts(n, fractions)):
        split[order[start:start + count]] = k
        start += count
    position = np.empty(n, np.int64)
    for k in range(len(fractions)):
        members = np.flatnonzero(split == k)
        position[members] = np.arange(len(members))
    return split, position


# ---------------------------------------------------------------- the whole dataset

SPLITS = ("train", "val", "test")


def dataset_attrs(cfg: CmbConfig, spectrum: Spectrum, lmax: int) -> dict:
    """HDF5 attributes of every shard: nside, lmax, fwhm_arcmin, reso_arcmin, cl_source, seed, ..."""
    m, p = cfg.maps, cfg.patches
    return {"nside": m.nside, "lmax": lmax, "fwhm_arcmin": m.fwhm_arcmin, "reso_arcmin": p.reso_arcmin,
            "cl_source": spectrum.source, "seed": cfg.seed, "pixwin": m.pixwin,
            "noise_uk_arcmin": m.noise_uk_arcmin, "units": "uK_CMB", "projection": "gnomonic, nearest pixel",
            "cl_convention": spectrum.convention}


def make_dataset(cfg: CmbConfig, out_dir: str | os.PathLike, overwrite: bool = False) -> dict | None:
    """Simulate maps over MPI ranks, cut patches, write the sharded dataset (rank 0 writes).

    Call after ``dist.init_mpi()`` (or in a single process). Every rank checks the config
    first, so bad input fails before any map. Map ``i`` is made by rank ``i mod size``; after
    each round of maps rank 0 gathers the patches into per-split arrays on disk, so memory
    stays bounded by one map per rank. Returns the manifest on rank 0, None elsewhere.
    """
    out = shards.claim_output(out_dir, overwrite)
    spectrum = load_spectrum(cfg.spectrum)
    for text in check_config(cfg, spectrum):
        logs.root_warning(log, text)
    grid = PatchGrid.of(cfg, spectrum)
    start = time.perf_counter()
    writer = rundir.write_with(_SplitWriter, out, cfg, grid.n_total, grid.shape)
    try:
        _simulate_rounds(cfg, spectrum.cl, grid, writer)
        manifest = rundir.write_with(_write_outputs, out, cfg, spectrum, grid, writer, time.perf_counter() - start)
    finally:
        if writer is not None:
            writer.close()
    if manifest is not None and cfg.output.example_patches > 0:
        _draw_examples(out, cfg)
    return manifest


@dataclasses.dataclass(frozen=True)
class PatchGrid:
    """Where the patches of every map are: band limit, patch shape, centres and the map pixel under each patch pixel."""

    lmax: int
    shape: tuple[int, int]
    centers: np.ndarray  # float64 [Nc, 2] lon, lat in degrees
    pixels: np.ndarray   # int64 [Nc, H, W] RING indices
    n_total: int         # patches of all maps

    @classmethod
    def of(cls, cfg: CmbConfig, spectrum: Spectrum) -> "PatchGrid":
        lmax = resolve_lmax(cfg.maps, spectrum)
        shape = (int(cfg.patches.shape[0]), int(cfg.patches.shape[1]))
        centers = patch_centers(cfg.patches.centers_nside, cfg.patches.b_min_deg,
                                patch_half_diagonal_deg(shape, cfg.patches.reso_arcmin))
        pixels = patch_pixels(cfg.maps.nside, centers, shape, cfg.patches.reso_arcmin)
        if cfg.maps.pixwin:
            pixel_window(cfg.maps.nside, lmax)  # computed once per process, before the clock starts
        grid = cls(lmax, shape, centers, pixels, len(centers) * cfg.maps.n_maps)
        log.info("%d maps (nside %d, lmax %d, beam %g') -> %d patches of %dx%d at %g' from %s, on %d rank(s)",
                 cfg.maps.n_maps, cfg.maps.nside, lmax, cfg.maps.fwhm_arcmin, grid.n_total, shape[0], shape[1],
                 cfg.patches.reso_arcmin, spectrum.source, dist.context().size)
        return grid


def _write_outputs(out: Path, cfg: CmbConfig, spectrum: Spectrum, grid: PatchGrid, writer: "_SplitWriter",
                   seconds: float) -> dict:
    """The input C_ℓ next to the data, then the shards and the manifest (last); rank 0."""
    write_spectrum(out / INPUT_FILE, spectrum.cl[:grid.lmax + 1],
                   [f"input TT spectrum of this dataset, read from {spectrum.source}",
                    f"the file held {spectrum.convention} (decided by: {spectrum.detected_by}); units uK^2",
                    "ell C_ell_TT"])
    extra = {"spectrum": {**spectrum.describe(), "file_in_dataset": INPUT_FILE},
             "simulation_seconds": round(seconds, 3), "ranks": dist.context().size,
             "patches": {"per_map": len(grid.centers), "shape": list(grid.shape), "maps": cfg.maps.n_maps}}
    manifest = shards.write_dataset(
        out, KIND, writer.splits(grid.centers), dataset_attrs(cfg, spectrum, grid.lmax), config=config.to_dict(cfg),
        seed=cfg.seed, samples_per_shard=cfg.output.samples_per_shard, extra=extra)
    log.info("wrote %s: %s patches in %.1f s", out,
             ", ".join(f"{s} {e['n']}" for s, e in manifest["splits"].items()), seconds)
    return manifest


def _simulate_rounds(cfg: CmbConfig, cl: np.ndarray, grid: PatchGrid, writer: "_SplitWriter | None") -> None:
    """Round k: rank r makes map k·size + r (if it exists); rank 0 gathers the patches into ``writer``."""
    ctx = dist.context()
    m = cfg.maps
    rounds = -(-m.n_maps // ctx.size)
    with logs.progress(total=m.n_maps, unit="map", desc="maps") as bar:
        for k in range(rounds):
            index = k * ctx.size + ctx.rank
            mine = None
            if index < m.n_maps:
                sky = simulate_map(cl, m.nside, grid.lmax, m.fwhm_arcmin, m.pixwin, m.noise_uk_arcmin, cfg.seed, index)
                mine = (index, cut_patches(sky, grid.pixels))
                del sky
            everyone = dist.gather_object(mine)
            if writer is not None:
                done = [item for item in everyone if item is not None]
                for index, patches in done:
                    writer.add(index, patches)
                bar.update(len(done))


class _SplitWriter:
    """Rank 0's per-split arrays on disk (memory-mapped), filled map by map."""

    def __init__(self, out: Path, cfg: CmbConfig, n_total: int, shape: tuple[int, int]):
        fractions = (cfg.splits.train, cfg.splits.val, cfg.splits.test)
        self.split, self.position = split_assignment(n_total, fractions, cfg.seed)
        self.per_map = n_total // cfg.maps.n_maps
        out.mkdir(parents=True, exist_ok=True)
        self.paths = [out / f".{name}-patches.tmp.npy" for name in SPLITS]
        self.arrays = [np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                                 shape=(int((self.split == k).sum()),) + shape)
                       for k, path in enumerate(self.paths)]

    def add(self, index: int, patches: np.ndarray) -> None:
        g = index * self.per_map + np.arange(len(patches))
        for k, array in enumerate(self.arrays):
            sel = self.split[g] == k
            array[self.position[g[sel]]] = patches[sel]

    def splits(self, centers: np.ndarray) -> dict:
        n_maps = len(self.split) // self.per_map
        all_centers = np.tile(centers, (n_maps, 1))
        out = {}
        for k, name in enumerate(SPLITS):
            members = np.flatnonzero(self.split == k)
            if len(members):
                self.arrays[k].flush()
                out[name] = {"patches": self.arrays[k], "centers": all_centers[members]}
        return out

    def close(self) -> None:
        self.arrays = []
        for path in self.paths:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- pictures

def _draw_examples(out: Path, cfg: CmbConfig) -> None:
    """``examples.png``: the first patches of the dataset; a failure is a warning, never a failed dataset."""
    try:
        rundir.write_figure(out / "examples.png", _examples_figure, out, cfg, dpi=90)
    except Exception as err:  # a picture must never fail a finished dataset
        log.warning("could not draw %s/examples.png: %s", out, err)


def _examples_figure(out: Path, cfg: CmbConfig):
    data = ShardSet(out, "train" if cfg.splits.train > 0 else "test", kind=KIND)
    sample = data.read(0, min(cfg.output.example_patches, data.n))
    data.close()
    return images.cmb_patches(sample["patches"], sample["centers"], cfg.patches.reso_arcmin)
