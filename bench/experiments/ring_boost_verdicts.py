"""Which referee tests catch a 5 % boost of one Fourier ring, on tests/unit/test_referee.py's pool.

    python bench/experiments/ring_boost_verdicts.py

For rings k = 3, 5, 8, 11 prints the share of 200 draws (4 reference skies against 4 sample
skies, as the unit test) in which the boosted samples fail the whole referee, and the
band-power, rings and scatter tests each. Figures of 2026-12-05 in docs/sampling.md
(k = 8: whole 93 %, rings 93 %, band powers 46 %). About 4 minutes.
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "unit"))
import test_referee as T  # noqa: E402  (the pool, draws and perturbation the unit tests use)

pool = T.Pool()
for k in (3, 5, 8, 11):
    boosted = T._ring_boost(pool.patches, k, 1.05)
    per_sky, pairs = pool.sky_sums(pool.features(boosted)), pool.pair_table(boosted)
    verdicts = [pool.referee(ref, sam, per_sky, None, pairs) for ref, sam in T._draws(T.POWER_DRAWS, 2)]
    failed = {n: float(np.mean([not v["tests"][n]["pass"] for v in verdicts])) for n in ("band_powers", "rings", "scatter")}
    print(f"ring {k}: whole referee fails {np.mean([not v['pass'] for v in verdicts]):.3f}", failed, flush=True)
