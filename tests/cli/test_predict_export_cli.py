"""`predict classifier` on a dataset and on a folder of cut-outs (1 and 2 ranks), and `export classifier`
loaded by plain TensorFlow in a process where cosmotrain cannot be imported."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from testlib import REPO, run_cli, toy_galaxies
from cosmotrain.data import shards

CLASSES = ["round", "edge-on", "spiral"]
TINY = ["--config", str(REPO / "configs" / "classifier_tiny.yaml"), "--set", "model.filters=[8, 16]",
        "--set", "model.dense=[16]", "--set", "train.batch_size=16", "--set", "train.epochs=2"]
HEADER = ["file", "p_round", "p_edge_on", "p_spiral", "predicted"]


def framed(image: np.ndarray, side: int, seed: int) -> np.ndarray:
    """``image`` (uint8 [16,16,3]) scaled to fill the central half of a ``side`` px noisy cut-out."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 20, (side, side, 3)).astype(np.uint8)
    inner = np.asarray(Image.fromarray(image).resize((side // 2, side // 2), Image.Resampling.NEAREST))
    out[side // 4:side // 4 + side // 2, side // 4:side // 4 + side // 2] = inner
    return out


def write_cutouts(folder, toys):
    from astropy.io import fits

    folder.mkdir()
    Image.fromarray(framed(toys[0], 32, 0)).save(folder / "a.png")           # crop 0.5 gives 16 px: no resize
    Image.fromarray(framed(toys[1], 32, 1)).save(folder / "a2.PNG")
    Image.fromarray(framed(toys[2], 48, 2)).save(folder / "b.jpg", quality=90)  # 24 px, resized to 16
    fits.PrimaryHDU(framed(toys[3], 40, 3).mean(axis=2) * 0.01 + 5.0).writeto(folder / "c.fits")  # grey fluxes
    fits.PrimaryHDU(np.moveaxis(framed(toys[4], 32, 4), -1, 0)).writeto(folder / "d.fits")      # uint8 [3,H,W]
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(dataset, run, cut-out folder, tmp) after a 2-epoch tiny training on toy galaxies."""
    base = tmp_path_factory.mktemp("predict")
    splits = {"train": toy_galaxies(384, 1), "val": toy_galaxies(64, 2), "test": toy_galaxies(40, 3)}
    shards.write_dataset(base / "galaxies", "galaxies", splits, {"class_names": CLASSES, "threshold": 0.9,
                                                                 "source": "test"}, config={}, seed=0)
    out = run_cli("train", "classifier", *TINY, "--data", base / "galaxies", "--out", base / "run", timeout=300)
    assert out.returncode == 0, out.stderr
    folder = write_cutouts(base / "cutouts", splits["test"]["images"][:5])
    return base / "galaxies", base / "run", folder, base


@pytest.fixture(scope="module")
def folder_predictions(setup):
    _, run, folder, base = setup
    out = run_cli("predict", "classifier", "--run", run, "--images", folder, "--out", base / "pred1", "--batch", "2")
    assert out.returncode == 0, out.stderr
    return base / "pred1", out


def test_a_folder_of_cutouts_gets_one_csv_row_per_readable_file(folder_predictions):
    pred, out = folder_predictions
    header, rows = read_csv(pred / "predictions.csv")
    assert header == HEADER
    assert [r[0] for r in rows] == ["a.png", "a2.PNG", "b.jpg", "c.fits", "d.fits"]  # sorted, unreadable skipped
    probs = np.array([[float(x) for x in r[1:4]] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert [r[4] for r in rows] == [CLASSES[k] for k in probs.argmax(axis=1)]
    manifest = json.loads((pred / "manifest.json").read_text())
    assert manifest["images"]["unreadable"] == {"count": 2, "files": {"broken.png": "corrupt", "empty.jpg": "corrupt"}}
    assert manifest["images"]["files"] == 7 and manifest["images"]["readable"] == 5
    assert "skipping 2 of 7 files that cannot be read: broken.png (corrupt), empty.jpg (corrupt)" in out.stderr


def test_two_ranks_write_the_same_predictions_once(setup, folder_predictions):
    _, run, folder, base = setup
    out = run_cli("predict", "classifier", "--run", run, "--images", folder, "--out", base / "pred2", "--batch", "2",
                  np_=2)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (base / "pred2").glob("part-*.h5")) == ["part-00000.h5", "part-00001.h5"]
    one, two = read_csv(folder_predictions[0] / "predictions.csv"), read_csv(base / "pred2" / "predictions.csv")
    assert [r[0] for r in one[1]] == [r[0] for r in two[1]] and [r[4] for r in one[1]] == [r[4] for r in two[1]]
    assert np.allclose([[float(x) for x in r[1:4]] for r in one[1]], [[float(x) for x in r[1:4]] for r in two[1]],
                       atol=2e-6)
    assert out.stderr.count("skipping 2 of 7 files") == 1  # one warning, from rank 0


def test_a_dataset_split_gets_its_galaxy_ids_in_the_csv(setup):
    import h5py

    data, run, _, base = setup
    out = run_cli("predict", "classifier", "--run", run, "--images", data, "--out", base / "pred_ds")
    assert out.returncode == 0, out.stderr
    header, rows = read_csv(base / "pred_ds" / "predictions.csv")
    assert header[0] == "id" and len(rows) == 40
    with h5py.File(base / "pred_ds" / "samples.h5") as h5:
        assert [int(r[0]) for r in rows] == h5["ids"][:].tolist()
        assert np.allclose([[float(x) for x in r[1:4]] for r in rows], h5["probabilities"][:], atol=1e-6)


def test_folders_without_readable_cutouts_are_one_line_errors(setup, tmp_path):
    _, run, _, _ = setup
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("x")
    out = run_cli("predict", "classifier", "--run", run, "--images", tmp_path / "none", "--out", tmp_path / "p")
    assert out.returncode == 2 and "holds no JPEG, PNG or FITS files" in out.stderr.strip().splitlines()[-1]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"nope")
    out = run_cli("predict", "classifier", "--run", run, "--images", tmp_path / "bad", "--out", tmp_path / "p")
    assert out.returncode == 2 and "none of the 1 cut-outs" in out.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())


PLAIN_TF = """
import json, sys
sys.modules["cosmotrain"] = None          # importing cosmotrain now fails: plain TensorFlow only
sys.path = [p for p in sys.path if not p.rstrip("/").endswith("src")]
import numpy as np
import tensorflow as tf
from PIL import Image
model = tf.saved_model.load(sys.argv[1])
images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sys.argv[2:]])
probs = model.signatures["serving_default"](images=tf.constant(images))["probabilities"].numpy()
print(json.dumps({"probs": probs.tolist(), "classes": [c.decode() for c in model.class_names.numpy()],
                  "size": int(model.image_size.numpy())}))
"""


def test_the_exported_savedmodel_gives_predicts_probabilities_in_plain_tensorflow(setup, folder_predictions):
    _, run, folder, base = setup
    out = run_cli("export", "classifier", "--run", run, "--out", base / "exported")
    assert out.returncode == 0, out.stderr
    info = json.loads((base / "exported" / "cosmotrain.json").read_text())
    assert info["class_names"] == CLASSES and info["image_size"] == [16, 16] and info["crop"] == 0.5
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run([sys.executable, "-c", PLAIN_TF, str(base / "exported"), str(folder / "a.png"),
                           str(folder / "a2.PNG")], capture_output=True, text=True, timeout=300, env=env,
                          cwd=str(base))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["classes"] == CLASSES and result["size"] == 16
    _, rows = read_csv(folder_predictions[0] / "predictions.csv")
    expected = [[float(x) for x in r[1:4]] for r in rows[:2]]
    assert np.allclose(result["probs"], expected, atol=1e-5)


def test_export_refuses_a_non_empty_folder_without_overwrite(setup, tmp_path):
    _, run, _, _ = setup
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    out = run_cli("export", "classifier", "--run", run, "--out", tmp_path / "taken", "--checkpoint", "latest")
    assert out.returncode == 2 and "not empty" in out.stderr.strip().splitlines()[-1]
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    out = run_cli("export", "classifier", "--run", run, "--out", tmp_path / "taken", "--checkpoint", "latest",
                  "--overwrite")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "taken" / "saved_model.pb").is_file() and not (tmp_path / "taken" / "keep.txt").exists()
