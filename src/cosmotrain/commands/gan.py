"""`cosmotrain train gan`: the DCGAN on CMB patches, with science monitors."""
from __future__ import annotations

from cosmotrain.commands import train_command

TRAIN_HELP = """Train the CMB DCGAN data-parallel: one process, or N ranks under mpirun, horovodrun or srun.

Losses J_D and J_G (non-saturating, the standard DCGAN losses), Adam(2e-4, beta1=0.5). Every
monitor.every steps the generator makes monitor.generated patches and the run logs, per
ell bin, the error of their mean C_ell over its sample-variance floor, the pixel KS distance
over its real-vs-real floor and Minkowski functionals; the lowest score is kept as
RUN/checkpoints/best. Writes RUN/config.yaml, checkpoints/, history.csv, tensorboard/,
monitors/, plots/ and metrics.json. On SIGUSR1 or SIGTERM (SLURM's time limit, pre-emption)
the run checkpoints and exits with code 75; --resume continues it exactly.

examples:
  cosmotrain data cmb --config configs/cmb_tiny.yaml --out data/cmb_tiny
  mpirun -np 2 cosmotrain train gan --config configs/gan_tiny.yaml --data data/cmb_tiny --out runs/gan
  mpirun -np 2 cosmotrain train gan --out runs/gan --resume"""


COMMANDS = [
    train_command("gan", "train the CMB DCGAN (Horovod data-parallel) with science monitors", TRAIN_HELP, "CMB",
                  "train.steps=8000"),
]
