#!/usr/bin/env bash
# make demo: the project end to end on built-in synthetic data, on 2 MPI ranks.
#
#   1. 6000 survey-like synthetic galaxies with simulated volunteers' votes, 64x64,
#      split 80/10/10; about half reach the 90 % agreement that keeps a class -> demo/galaxies/
#   2. the galaxy classifier trained on 2 ranks (mpirun)      -> demo/classifier/
#   3. its evaluation on the held-out test split, plain and with D4 test-time augmentation
#   4. demo/summary.json: {"classifier": {"test_accuracy": ... (the kept test galaxies),
#      "vote_rmse": ... (all test galaxies)}, ...} and the plot paths
#   GAN 1. simulated CMB patches (configs/cmb_tiny.yaml)          -> demo/cmb/
#   GAN 2. the CMB DCGAN trained on 2 ranks, with science monitors -> demo/gan/; summary.json "gan":
#          cl_error_over_floor, ks_over_floor (final), the best monitor, the plot paths
#
# Every stage overwrites its own earlier output, so `make demo` can be run again.
# Later stages (the GAN) add their own key to summary.json with merge_summary.
#   DEMO_DIR    output folder (default demo)
#   DEMO_RANKS  MPI ranks for training (default 2)
set -euo pipefail

cd "$(dirname "$0")/.."
DEMO=${DEMO_DIR:-demo}
RANKS=${DEMO_RANKS:-2}
[ -d .venv/bin ] && export PATH="$PWD/.venv/bin:$PATH"
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
MPIRUN=(mpirun -np "$RANKS" --bind-to none)
if [ "$(nproc)" -lt "$RANKS" ]; then
  MPIRUN+=(--oversubscribe)
fi

t0=$(date +%s)
stage() { echo; echo "== demo [$(( $(date +%s) - t0 ))s] $*"; }

# merge_summary KEY JSON: set KEY of $DEMO/summary.json to the JSON value, keeping other keys.
merge_summary() {
  python - "$DEMO/summary.json" "$1" "$2" <<'PY'
import json, sys
from pathlib import Path
from cosmotrain.files import atomic_write_text
path, key, value = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
summary = json.loads(path.read_text()) if path.is_file() else {}
summary[key] = value
atomic_write_text(path, json.dumps(summary, indent=1) + "\n")
PY
}

mkdir -p "$DEMO"

stage "1/3 synthetic galaxies: 6000 survey-like cut-outs at 64x64 with simulated votes, train/val/test 80/10/10"
"${MPIRUN[@]}" cosmotrain data galaxies --synthetic 6000 --out "$DEMO/galaxies" --overwrite

stage "2/3 training the galaxy classifier on $RANKS MPI ranks"
"${MPIRUN[@]}" cosmotrain train classifier --config configs/classifier_tiny.yaml \
  --data "$DEMO/galaxies" --out "$DEMO/classifier" --overwrite

stage "3/3 evaluating on the held-out test split (plain, then with D4 test-time augmentation)"
cosmotrain evaluate classifier --run "$DEMO/classifier"
cosmotrain evaluate classifier --run "$DEMO/classifier" --tta  # eval/metrics_tta.json, beside the plain one

classifier_summary=$(python - "$DEMO" <<'PY'
import json, sys
from pathlib import Path
demo = Path(sys.argv[1])
plain = json.loads((demo / "classifier/eval/metrics.json").read_text())
tta = json.loads((demo / "classifier/eval/metrics_tta.json").read_text())
run = json.loads((demo / "classifier/metrics.json").read_text())
print(json.dumps({
    "test_accuracy": plain["accuracy"], "test_accuracy_tta": tta["accuracy"], "n_test": plain["n"],
    "vote_rmse": plain["vote_rmse"], "vote_rmse_of_mean": plain["vote_rmse_of_mean"], "n_test_all": plain["n_all"],
    "macro_f1": plain["macro_f1"], "confusion_matrix": plain["confusion_matrix"],
    "epochs": run["epochs"], "ranks": run["ranks"], "best_val_loss": run["best_val_loss"],
    "warnings": plain["warnings"], "run": str(demo / "classifier"),
    "plots": {**plain["plots"], "dataset_preview": str(demo / "galaxies/preview.png")},
}))
PY
)
merge_summary classifier "$classifier_summary"

# ---- the GAN: a small simulated CMB patch set, the DCGAN on it, its science monitors
stage "GAN 1/3 simulated CMB patches (configs/cmb_tiny.yaml: 10 skies, 4800 patches of 64x64; 6 skies train, 2 val, 2 test) on $RANKS ranks"
"${MPIRUN[@]}" cosmotrain data cmb --config configs/cmb_tiny.yaml --out "$DEMO/cmb" --overwrite

stage "GAN 2/3 training the CMB DCGAN on $RANKS MPI ranks (configs/gan_tiny.yaml, monitors every 250 steps)"
"${MPIRUN[@]}" cosmotrain train gan --config configs/gan_tiny.yaml --data "$DEMO/cmb" --out "$DEMO/gan" --overwrite

gan_summary=$(python - "$DEMO" <<'PY'
import json, sys
from pathlib import Path
demo = Path(sys.argv[1])
run = json.loads((demo / "gan/metrics.json").read_text())
print(json.dumps({
    "cl_error_over_floor": run["cl_error_over_floor"], "ks_over_floor": run["ks_over_floor"],
    "goals": run["goals"], "best": {"step": run["best_step"], "checkpoint": run["best_checkpoint"],
                                    "cl_error_over_floor": run["best"]["cl_error_over_floor"],
                                    "ks_over_floor": run["best"]["ks_over_floor"]},
    "steps": run["steps"], "ranks": run["ranks"], "train_seconds": round(run["train_seconds"], 1),
    "run": str(demo / "gan"), "plots": {Path(p).stem: p for p in run["plots"]},
}))
PY
)
merge_summary gan "$gan_summary"
python - "$DEMO/summary.json" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))["gan"]
print(f"GAN: final C_ell error/floor {g['cl_error_over_floor']:.2f} (goal {g['goals']['cl_error_over_floor']}), "
      f"KS/floor {g['ks_over_floor']:.2f} (goal {g['goals']['ks_over_floor']}); best (by the referee on the "
      f"validation skies) at step {g['best']['step']}: "
      f"{g['best']['cl_error_over_floor']:.2f} / {g['best']['ks_over_floor']:.2f}; {g['steps']} steps on {g['ranks']} "
      f"ranks in {g['train_seconds']:.0f} s; plots in {g['run']}/plots")
PY

stage "GAN 3/3 the referee: 4096 fresh patches against the test skies, with and without the calibration filter"
mkdir -p "$DEMO/referee"
"${MPIRUN[@]}" cosmotrain sample gan --run "$DEMO/gan" --n 4096 --out "$DEMO/samples" --overwrite
"${MPIRUN[@]}" cosmotrain validate samples "$DEMO/samples" --reference "$DEMO/cmb" --out "$DEMO/referee/calibrated.json"
python - "$DEMO" <<'PY'
import sys
from pathlib import Path
import h5py
from cosmotrain.inference import load_generator
demo = Path(sys.argv[1])
generator = load_generator(demo / "gan", checkpoint="best")
generator.gains = None  # G's own patches, without the calibration filter
with h5py.File(demo / "referee" / "uncalibrated.h5", "w") as h5:
    h5.create_dataset("patches", data=generator.sample(4096, seed=0)).attrs["reso_arcmin"] = \
        generator.info["dataset"]["reso_arcmin"]
PY
"${MPIRUN[@]}" cosmotrain validate samples "$DEMO/referee/uncalibrated.h5" --reference "$DEMO/cmb" \
  --out "$DEMO/referee/uncalibrated.json"
referee_summary=$(python - "$DEMO" <<'PY'
import json, sys
from pathlib import Path
demo = Path(sys.argv[1])
out = {}
for name in ("calibrated", "uncalibrated"):
    report = json.loads((demo / "referee" / f"{name}.json").read_text())
    out[name] = {"pass": report["pass"], "failed": report["failed"], "figure": report["figure"],
                 "p_values": {t: round(v["p_value"], 6) for t, v in report["tests"].items()}}
print(json.dumps(out))
PY
)
merge_summary referee "$referee_summary"
python - "$DEMO/summary.json" <<'PY'
import json, sys
for name, r in json.load(open(sys.argv[1]))["referee"].items():
    verdict = "PASS" if r["pass"] else "FAIL (" + ", ".join(r["failed"]) + ")"
    print(f"referee on the test skies, 4096 GAN samples {'with' if name == 'calibrated' else 'without'} the "
          f"calibration filter: {verdict}; figure {r['figure']}")
    for test, p in r["p_values"].items():
        print(f"  {test:13s} {'pass' if test not in r['failed'] else 'FAIL'}  p = {p:.3g}")
PY

stage "done in $(( $(date +%s) - t0 ))s"
python - "$DEMO/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
c = s["classifier"]
print(f"classifier: test accuracy {c['test_accuracy']:.4f} ({c['test_accuracy_tta']:.4f} with D4 TTA) "
      f"on the {c['n_test']} held-out galaxies a class keeps; vote RMSE {c['vote_rmse']:.4f} on all "
      f"{c['n_test_all']} (the mean fractions score {c['vote_rmse_of_mean']:.4f}); {c['epochs']} epochs on "
      f"{c['ranks']} ranks")
print("plots:")
for name, path in c["plots"].items():
    print(f"  {name:18s} {path}")
print(f"summary: {sys.argv[1]}")
PY
