"""Which rings fail the referee's rings test: z per ring, with and without its window, against the validation skies.

    python bench/experiments/gan_rings.py RUN DATASET [best|latest] [SETS]

Draws SETS (default 2) fresh latent sets of 1024 patches from the run's checkpoint, puts
each to the referee against the dataset's validation split (the test skies stay for the
verdict) and prints the failed tests, the rings test's z per ring one fundamental wide
(Tukey-windowed and unwindowed readings), the band-power ratios and the scatter test's
ratios (samples' patch-to-patch scatter over the reference's, per band).
"""
import sys

from cosmotrain.data import referee_side
from cosmotrain.inference import load_generator


def main(run: str, data: str, which: str = "best", sets: str = "2") -> None:
    reference = referee_side.build(data, "val")
    generator = load_generator(run, which)
    for s in range(int(sets)):
        verdict = referee_side.judge(reference, generator.sample(1024, seed=1000 + s))
        rings = verdict["tests"]["rings"]
        print(f"set {s}: failed {verdict['failed']}; worst ring {rings['worst_ring_k']} ({rings['worst_reading']})")
        for name in ("z_windowed", "z_unwindowed"):
            print(f"  {name:13s}", " ".join(f"{z:+.1f}" for z in rings[name]))
        print("  band powers  ", " ".join(f"{r:.3f}" for r in verdict["tests"]["band_powers"]["ratio"]))
        print("  scatter      ", " ".join(f"{r:.3f}" for r in verdict["tests"]["scatter"]["ratio"]))


if __name__ == "__main__":
    main(*sys.argv[1:])
