"""`cosmotrain data cmb`, `cosmotrain data cmb-spectrum` and `cosmotrain spectra`."""
from __future__ import annotations

import argparse

from cosmotrain.commands import Command, add_config_arguments, add_split_argument

CMB_HELP = """Simulate full-sky CMB temperature maps with healpy and cut square gnomonic patches
into a sharded HDF5 dataset (patches float32 [N,H,W] in μK_CMB, centers [N,2] lon/lat deg),
split train/val/test. Maps are spread over MPI ranks; the dataset is the same whatever the
number of ranks. Also writes DIR/cl_input.txt (the input C_ℓ) and DIR/examples.png.

examples:
  cosmotrain data cmb --config configs/cmb_tiny.yaml --out data/cmb_tiny
  mpirun -np 8 cosmotrain data cmb --config configs/cmb.yaml --out data/cmb --set maps.n_maps=200
  cosmotrain data cmb --config configs/cmb_tiny.yaml --set spectrum.file=my_cls.dat --out data/cmb_mine"""

SPECTRUM_HELP = """Write a TT C_ℓ table (μK², columns 'ell C_ell') usable as spectrum.file.

With --camb, compute it with CAMB for the Planck 2018 best fit (needs the optional extra:
pip install 'cosmotrain[camb]'); without, copy the table shipped with cosmotrain (the same
computation, done once)."""

SPECTRA_HELP = """Measure the flat-sky TT band powers of one split of a CMB patch dataset (the train split
unless --split says otherwise) and compare them with theory.

Each patch is apodised (Hann), its window-weighted mean removed, and |FFT|² averaged in ℓ
annuli: the band powers of the patches as they are, beam and pixel window included (not
deconvolved: a sky C_ℓ would need the window's mode coupling undone, which small patches do
not allow bin by bin). FILE.json holds ell (mean ℓ per bin), edges, mean and std (C_ℓ in μK²
over the patches), theory (the exact expectation of this estimator for the input spectrum:
beam, pixel window, apodisation coupling, aliasing) and n_patches.

examples:
  cosmotrain spectra data/cmb_tiny --out cmb_spectra.json --plot cmb_spectra.png
  mpirun -np 2 cosmotrain spectra data/cmb --split test --out test_cl.json"""


def add_cmb_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "cmb_tiny", "maps.n_maps=200")
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in DIR")


def run_cmb(args: argparse.Namespace) -> int:
    from cosmotrain import config, dist, logs

    dist.init_mpi()
    logs.setup(args.verbose)
    from cosmotrain.data import cmb

    cfg = config.load(cmb.CmbConfig, args.config, args.overrides)
    cmb.make_dataset(cfg, args.out, overwrite=args.overwrite)
    return 0


def add_spectrum_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FILE", help="text file to write")
    parser.add_argument("--camb", action="store_true", help="compute with CAMB (optional dependency)")
    parser.add_argument("--lmax", type=int, default=5000, help="highest ℓ with --camb (default 5000)")


def run_spectrum(args: argparse.Namespace) -> int:
    from cosmotrain import logs

    logs.setup(args.verbose)
    from cosmotrain.data import cmb_spectrum

    cmb_spectrum.copy_spectrum(args.out, args.camb, args.lmax)
    return 0


def add_spectra_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET", help="a dataset folder made by 'cosmotrain data cmb'")
    parser.add_argument("--out", required=True, metavar="FILE.json", help="where the spectra go")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw D_ℓ of the mean ± 1σ against theory")
    add_split_argument(parser, "train", "DATASET to measure")
    parser.add_argument("--max-patches", type=int, metavar="N", help="use only the first N patches")
    parser.add_argument("--edges", metavar="L0,L1,...", help="ℓ bin edges (default: 2 fundamentals wide, from "
                        "2 fundamentals of the patch to its Nyquist ℓ or the map's ℓmax)")
    parser.add_argument("--window", default="hann", choices=("hann", "tukey", "none"), help="apodisation")


def run_spectra(args: argparse.Namespace) -> int:
    from cosmotrain import dist, logs
    from cosmotrain.errors import UserError

    dist.init_mpi()
    logs.setup(args.verbose)
    from cosmotrain.dataset_spectra import spectra_report

    edges = None
    if args.edges:
        try:
            edges = [float(x) for x in args.edges.split(",")]
        except ValueError:
            raise UserError(f"--edges {args.edges!r} is not a comma-separated list of numbers, e.g. 200,400,600")
    spectra_report(args.dataset, args.out, args.plot, split=args.split, edges=edges, window=args.window,
                   max_patches=args.max_patches)
    return 0


COMMANDS = [
    Command("data", "cmb", "simulate CMB maps and cut a sharded patch dataset", add_cmb_arguments, run_cmb,
            description=CMB_HELP),
    Command("data", "cmb-spectrum", "write the fiducial TT spectrum (optionally recomputed with CAMB)",
            add_spectrum_arguments, run_spectrum, description=SPECTRUM_HELP),
    Command("spectra", None, "power spectra of a CMB patch dataset against theory", add_spectra_arguments,
            run_spectra, description=SPECTRA_HELP),
]
