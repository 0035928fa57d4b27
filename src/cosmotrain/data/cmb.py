"""`cosmotrain data cmb`: a sharded dataset of simulated CMB patches, the same on 1 or N MPI ranks.

``make_dataset`` reads the input spectrum (``cmb_spectrum``), checks the whole config before
any sky is made (``check_config``), then in rounds: rank r simulates sky k·size + r and
evaluates it at its patches' pixels (``sky.simulate_patches``), rank 0 gathers them and
stages them split by split in a temporary HDF5 file (``_SplitWriter``); finally rank 0
writes the shards, the input spectrum (``cl_input.txt``), the manifest and ``examples.png``.
Every sky belongs to exactly one split (``sky_splits``, a seeded shuffle of the skies,
independent of the rank count), so no split shares a sky with another.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from cosmotrain import config, dist, logs, rundir
from cosmotrain.data import shards
from cosmotrain.data.cmb_spectrum import INPUT_FILE, Spectrum, SpectrumConfig, load_spectrum, write_spectrum
from cosmotrain.data.reader import ShardSet
from cosmotrain.data.shards import split_counts
from cosmotrain.data.sky import (map_spectrum, min_separation_deg, patch_centers, patch_half_diagonal_deg,
                                 patch_locations, simulate_patches)
from cosmotrain.errors import UserError
from cosmotrain.plots import images
from cosmotrain.science.spectra import beam_window, nyquist_ell, pixel_window

KIND = "cmb"
MAX_PATCH_DEG = 30.0  # larger patches are too curved for the flat-sky estimator
BEAM_LEFT = 1e-4      # a band limit below the patches' Nyquist ℓ warns if the beam passes more than this (B_ℓ²) there

log = logs.get("cmb")

# ---------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class MapsConfig:
    """The simulated skies: count, band limit, beam, pixel window, noise."""

    n_maps: int = 8
    nside: int = 1024                # the HEALPix resolution whose pixel window the skies carry (pixwin)
    lmax: Optional[int] = None       # default: √2 × the patches' Nyquist ℓ (their corners), or the spectrum's end
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
    """Fractions of the skies in each split (a seeded shuffle of the skies decides which)."""

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

def resolve_lmax(cfg: CmbConfig, spectrum: Spectrum) -> int:
    """The band limit: ``maps.lmax``, or min(√2 · the patches' Nyquist ℓ, the spectrum's ℓmax)."""
    if cfg.maps.lmax is not None:
        return cfg.maps.lmax
    return min(int(math.ceil(math.sqrt(2.0) * nyquist_ell(cfg.patches.reso_arcmin))), spectrum.lmax)


def check_config(cfg: CmbConfig, spectrum: Spectrum) -> list[str]:
    """Raise UserError for a config that cannot work; return warnings for dubious ones.

    Everything here is cheap and runs before any sky is made.
    """
    m, p = cfg.maps, cfg.patches
    lmax = _check_maps(cfg, spectrum)
    shape = _check_patch_shape(p)
    _check_centers(p, shape)
    _check_splits(cfg.splits, m.n_maps)
    nyquist = nyquist_ell(p.reso_arcmin)
    left = float(beam_window(lmax, m.fwhm_arcmin)[-1] ** 2)
    if lmax < nyquist and left > BEAM_LEFT:
        return [f"maps.lmax = {lmax} is below the patches' Nyquist ℓ = {nyquist:.0f} while the beam still passes "
                f"B_ℓ² = {left:.1e} there: the top ℓ bins will lack sky power; raise maps.lmax to "
                f"{math.ceil(nyquist)} or more"]
    return []


def _check_maps(cfg: CmbConfig, spectrum: Spectrum) -> int:
    m = cfg.maps
    if m.nside < 1 or m.nside & (m.nside - 1) or m.nside > 8192:
        raise UserError(f"maps.nside = {m.nside} is not a power of two between 1 and 8192; use e.g. "
                        f"{max(1, 1 << max(0, int(m.nside).bit_length() - 1))}")
    lmax = resolve_lmax(cfg, spectrum)
    if lmax < 2:
        raise UserError(f"maps.lmax = {lmax} leaves no multipole to simulate; use maps.lmax >= 2")
    if lmax > spectrum.lmax:
        raise UserError(f"the spectrum {spectrum.source} stops at ℓ = {spectrum.lmax}, maps.lmax is {lmax}; lower "
                        f"maps.lmax or give a spectrum reaching ℓ = {lmax}")
    if m.n_maps < 1:
        raise UserError(f"maps.n_maps = {m.n_maps}; make at least 1 sky")
    if m.fwhm_arcmin < 0 or m.noise_uk_arcmin < 0:
        raise UserError("maps.fwhm_arcmin and maps.noise_uk_arcmin must be >= 0")
    return lmax


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


def _check_splits(s: SplitsConfig, n_maps: int) -> None:
    fractions = (s.train, s.val, s.test)
    if min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise UserError(f"splits train/val/test = {fractions} must be >= 0 and add up to 1")
    counts = split_counts(n_maps, fractions)
    for name, f, c in zip(SPLITS, fractions, counts):
        if f > 0 and c == 0:
            need = int(math.ceil(1.0 / f - 1e-9))
            raise UserError(f"split {name} would get no sky of the {n_maps} (splits go by sky); make more skies "
                            f"(maps.n_maps >= {need}) or raise splits.{name}")


# ---------------------------------------------------------------- splits

SPLITS = ("train", "val", "test")


def sky_splits(n_maps: int, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """The split (int8 [n_maps]: 0 train, 1 val, 2 test) of every sky: a seeded shuffle of the skies.

    Each sky belongs to exactly one split, so patches of one sky never appear in two splits.
    Depends on (n_maps, fractions, seed) only, never on the number of ranks.
    """
    order = np.random.default_rng([int(seed), 0x5EED]).permutation(n_maps)
    split = np.empty(n_maps, np.int8)
    start = 0
    for k, count in enumerate(split_counts(n_maps, fractions)):
        split[order[start:start + count]] = k
        start += count
    return split


# ---------------------------------------------------------------- the whole dataset

def dataset_attrs(cfg: CmbConfig, spectrum: Spectrum, lmax: int) -> dict:
    """HDF5 attributes of every shard: nside, lmax, fwhm_arcmin, reso_arcmin, cl_source, seed, ..."""
    m, p = cfg.maps, cfg.patches
    return {"nside": m.nside, "lmax": lmax, "fwhm_arcmin": m.fwhm_arcmin, "reso_arcmin": p.reso_arcmin,
            "cl_source": spectrum.source, "seed": cfg.seed, "pixwin": m.pixwin,
            "noise_uk_arcmin": m.noise_uk_arcmin, "units": "uK_CMB",
            "projection": "gnomonic; the band-limited sky evaluated at each pixel centre from its a_lm",
            "cl_convention": spectrum.convention}


def make_dataset(cfg: CmbConfig, out_dir: str | os.PathLike, overwrite: bool = False) -> dict | None:
    """Simulate skies over MPI ranks, evaluate their patches, write the sharded dataset (rank 0 writes).

    Call after ``dist.init_mpi()`` (or in a single process). Every rank checks the config
    first, so bad input fails before any sky. Sky ``i`` is made by rank ``i mod size``; after
    each round rank 0 appends the patches to a temporary HDF5 file beside the output (an
    ordinary write: a full disk is an error, never a crash), so memory stays bounded by one
    sky per rank. Returns the manifest on rank 0, None elsewhere.
    """
    spectrum = load_spectrum(cfg.spectrum)
    for text in check_config(cfg, spectrum):
        logs.root_warning(log, text)
    grid = PatchGrid.of(cfg, spectrum)
    out = shards.claim_output(out_dir, overwrite, needed_bytes=grid.bytes_on_disk())
    start = time.perf_counter()
    writer = rundir.write_with(_SplitWriter, out, cfg, grid)
    try:
        _simulate_rounds(cfg, grid, writer)
        manifest = rundir.write_with(_write_outputs, out, cfg, spectrum, grid, writer, time.perf_counter() - start)
    finally:
        if writer is not None:
            writer.close()
    if manifest is not None and cfg.output.example_patches > 0:
        _draw_examples(out, cfg)
    return manifest


@dataclasses.dataclass(frozen=True)
class PatchGrid:
    """Where the patches of every sky are: spectrum, patch shape, centres and pixel positions."""

    map_cl: np.ndarray     # float64 [lmax+1] μK²: C_ℓ B_ℓ² [P_ℓ²], what every sky is drawn from
    shape: tuple[int, int]
    centers: np.ndarray    # float64 [Nc, 2] lon, lat in degrees
    locations: np.ndarray  # float64 [Nc·H·W, 2] colatitude, longitude in radians
    n_total: int           # patches of all skies

    @property
    def lmax(self) -> int:
        return len(self.map_cl) - 1

    def bytes_on_disk(self) -> int:
        """Peak disk use of writing the dataset: the staged patches and the shards made from them."""
        per_patch = self.shape[0] * self.shape[1] * 4 + 2 * 8 + 4  # patches float32, centers, sky
        return 2 * self.n_total * per_patch

    @classmethod
    def of(cls, cfg: CmbConfig, spectrum: Spectrum) -> "PatchGrid":
        m, p = cfg.maps, cfg.patches
        lmax = resolve_lmax(cfg, spectrum)
        shape = (int(p.shape[0]), int(p.shape[1]))
        centers = patch_centers(p.centers_nside, p.b_min_deg, patch_half_diagonal_deg(shape, p.reso_arcmin))
        if m.pixwin:
            pixel_window(m.nside, lmax)  # computed once per process, before the clock starts
        grid = cls(map_spectrum(spectrum.cl, m.nside, lmax, m.fwhm_arcmin, m.pixwin), shape, centers,
                   patch_locations(centers, shape, p.reso_arcmin), len(centers) * m.n_maps)
        log.info("%d skies (lmax %d, beam %g'%s) -> %d patches of %dx%d at %g' from %s, on %d rank(s)",
                 m.n_maps, lmax, m.fwhm_arcmin, f", nside {m.nside} pixel window" if m.pixwin else "", grid.n_total,
                 shape[0], shape[1], p.reso_arcmin, spectrum.source, dist.context().size)
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
             "patches": {"per_map": len(grid.centers), "shape": list(grid.shape), "maps": cfg.maps.n_maps},
             "skies": writer.skies()}
    manifest = shards.write_dataset(
        out, KIND, writer.splits(), dataset_attrs(cfg, spectrum, grid.lmax), config=config.to_dict(cfg),
        seed=cfg.seed, samples_per_shard=cfg.output.samples_per_shard, extra=extra)
    log.info("wrote %s: %s patches in %.1f s", out,
             ", ".join(f"{s} {e['n']}" for s, e in manifest["splits"].items()), seconds)
    return manifest


def _simulate_rounds(cfg: CmbConfig, grid: PatchGrid, writer: "_SplitWriter | None") -> None:
    """Round k: rank r makes sky k·size + r (if it exists); rank 0 gathers the patches into ``writer``."""
    ctx = dist.context()
    m, p = cfg.maps, cfg.patches
    rounds = -(-m.n_maps // ctx.size)
    with logs.progress(total=m.n_maps, unit="sky", desc="skies") as bar:
        for k in range(rounds):
            index = k * ctx.size + ctx.rank
            mine = None
            if index < m.n_maps:
                mine = (index, simulate_patches(grid.map_cl, grid.locations, grid.shape, p.reso_arcmin,
                                                m.noise_uk_arcmin, cfg.seed, index))
            everyone = dist.gather_object(mine)
            if writer is not None:
                done = [item for item in everyone if item is not None]
                for index, patches in done:
                    writer.add(index, patches)
                bar.update(len(done))


class _SplitWriter:
    """Rank 0's staging file: one HDF5 dataset of patches per split, filled sky by sky.

    It lives in a temporary folder beside the output (same file system) and is removed by
    ``close``. HDF5 writes are ordinary writes: a full disk raises an error (a memory map
    would kill the process with SIGBUS instead).
    """

    def __init__(self, out: Path, cfg: CmbConfig, grid: PatchGrid):
        import h5py

        self.split = sky_splits(cfg.maps.n_maps, (cfg.splits.train, cfg.splits.val, cfg.splits.test), cfg.seed)
        self.per_map, self.centers = len(grid.centers), grid.centers
        out.parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        try:
            self.h5 = h5py.File(self.folder / "patches.h5", "w")
        except OSError as err:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise _staging_error(out.parent, err) from None
        self.members = {name: np.flatnonzero(self.split == k) for k, name in enumerate(SPLITS)}
        self.patches = {name: self.h5.create_dataset(name, (len(skies) * self.per_map,) + grid.shape, np.float32,
                                                     chunks=(min(64, self.per_map),) + grid.shape)
                        for name, skies in self.members.items() if len(skies)}

    def add(self, index: int, patches: np.ndarray) -> None:
        """Store sky ``index``'s patches (float32 [Nc, H, W]) at its place in its split."""
        name = SPLITS[self.split[index]]
        slot = int(np.searchsorted(self.members[name], index)) * self.per_map
        try:
            self.patches[name][slot:slot + self.per_map] = patches
        except OSError as err:
            raise _staging_error(self.folder, err) from None

    def skies(self) -> dict:
        """The skies of every split, for the manifest: {split: [sky index, ...]}."""
        return {name: [int(s) for s in skies] for name, skies in self.members.items()}

    def splits(self) -> dict:
        """{split: {patches (the staged HDF5 dataset, read shard by shard), centers, sky}} of non-empty splits."""
        self.h5.flush()
        return {name: {"patches": data, "centers": np.tile(self.centers, (len(self.members[name]), 1)),
                       "sky": np.repeat(self.members[name], self.per_map).astype(np.int32)}
                for name, data in self.patches.items()}

    def close(self) -> None:
        self.patches = {}
        self.h5.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _staging_error(where: Path, err: OSError) -> UserError:
    return UserError(f"cannot stage patches in {where} ({err}); free disk space there or choose another --out")


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
