"""How training scales over GPUs: the scaling report's predicted efficiency and time per epoch."""
from __future__ import annotations


def efficiency_figure(models: dict, title: str):
    """Efficiency (left) and seconds per epoch (right) against GPUs, one line per model.

    ``models`` is ``scaling_report.table``'s result: name -> {"rows": [{"gpus", "efficiency",
    "epoch_s"}, ...], ...}.
    """
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, model in models.items():
        gpus = [r["gpus"] for r in model["rows"]]
        left.plot(gpus, [r["efficiency"] for r in model["rows"]], "o-", label=name)
        right.plot(gpus, [r["epoch_s"] for r in model["rows"]], "o-", label=name)
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("GPUs")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    left.set_ylim(0, 1.05)
    left.set_ylabel("weak-scaling efficiency (predicted)")
    right.set_yscale("log")
    right.set_ylabel("seconds per epoch (predicted)")
    figure.suptitle(title, fontsize=9)
    return figure
