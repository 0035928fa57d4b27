"""A stand-in for the `cosmotrain` console script that keeps the job scripts' contract.

It lets the job-script tests run on the real SLURM before (and independently of) the real
training code: real ranks (mpi4py under `srun --mpi=pmix` or `mpirun`), real signals,
real requeue. Each rank appends what it was called with to $COSMOTRAIN_STUB_LOG (JSON lines).

Training contract kept here (the one `cosmotrain train` follows): SIGUSR1 or SIGTERM on any rank ->
every rank stops at the next step boundary, rank 0 checkpoints, all exit with 75;
`--resume` continues from RUN/checkpoints. The "weights" evolve deterministically per step,
so an interrupted + resumed run must end with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI

COMM = MPI.COMM_WORLD
EXIT_REQUEUE = 75


def log_call(argv: list[str]) -> None:
    path = os.environ.get("COSMOTRAIN_STUB_LOG")
    if path:
        line = json.dumps({"argv": argv, "rank": COMM.rank, "size": COMM.size,
                           "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)})
        with open(path, "a") as f:
            f.write(line + "\n")


def opt(argv: list[str], name: str) -> str:
    if name not in argv:
        sys.exit(f"stub cosmotrain: missing {name}")
    return argv[argv.index(name) + 1]


def write_json(path: Path, obj: dict) -> None:
    if COMM.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj))
        tmp.replace(path)
    COMM.Barrier()


def train(argv: list[str]) -> int:
    run = Path(opt(argv, "--out"))
    if not Path(opt(argv, "--data")).exists():
        sys.exit("stub cosmotrain: no dataset")
    steps = int(os.environ.get("COSMOTRAIN_STUB_STEPS", "20"))
    stop = []
    signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    ckpt = run / "checkpoints" / "ckpt.npz"
    if COMM.rank == 0:
        run.mkdir(parents=True, exist_ok=True)
    COMM.Barrier()
    weights, start = np.zeros(4), 0
    if "--resume" in argv:
        saved = np.load(ckpt)
        weights, start = saved["weights"], int(saved["step"])
    for step in range(start, steps):
        weights = 0.9 * weights + np.sin(step + np.arange(4))  # the "training step"
        time.sleep(0.25)
        if COMM.rank == 0:
            (run / "progress").write_text(str(step + 1))
        if COMM.allreduce(len(stop), op=MPI.MAX):  # step boundary: everyone stops together
            if COMM.rank == 0:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                np.savez(run / "checkpoints" / "ckpt.tmp.npz", weights=weights, step=step + 1)
                os.replace(run / "checkpoints" / "ckpt.tmp.npz", ckpt)
            COMM.Barrier()
            print(f"stub rank {COMM.rank}: checkpointed at step {step + 1}, exiting {EXIT_REQUEUE}", flush=True)
            return EXIT_REQUEUE
    if COMM.rank == 0:
        np.save(run / "weights.npy", weights)
    write_json(run / "metrics.json", {"steps": steps, "ranks": COMM.size})
    return 0


def main(argv: list[str]) -> int:
    log_call(argv)
    verb = tuple(argv[:2])
    if verb in {("data", "galaxies"), ("data", "cmb")}:
        write_json(Path(opt(argv, "--out")) / "manifest.json", {"kind": argv[1]})
    elif verb in {("train", "classifier"), ("train", "gan")}:
        return train(argv)
    elif verb == ("sample", "gan"):
        write_json(Path(opt(argv, "--out")) / "manifest.json", {"n": int(opt(argv, "--n"))})
    elif verb == ("predict", "classifier"):
        write_json(Path(opt(argv, "--out")) / "predictions.json", {"run": opt(argv, "--run")})
    else:
        sys.exit(f"stub cosmotrain: unknown command {argv}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
