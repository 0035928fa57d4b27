"""Galaxy Zoo (Kaggle) ingest: the 3-class vote rule, the vote table, JPEG decoding, user errors."""
import json

import numpy as np
import pytest
from PIL import Image

from testlib import run_cli
from cosmotrain.data import galaxy_zoo as gz
from cosmotrain.errors import UserError
from fixtures_galaxy_zoo import build_kaggle_fixture, jpeg_bytes, rewrite_csv


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    root = tmp_path_factory.mktemp("kaggle")
    return root, build_kaggle_fixture(root, per_class=2)


# ---------------------------------------------------------------- the 3-class rule

def test_each_class_needs_its_own_fraction_at_or_above_tau():
    votes = np.array([
        [0.95, 0.00, 0.00],   # round
        [0.00, 0.91, 0.05],   # edge-on
        [0.02, 0.00, 0.93],   # spiral
        [0.90, 0.00, 0.00],   # exactly tau: kept
        [0.00, 0.00, 0.90],   # exactly tau: kept
        [0.8999, 0.0, 0.0],   # just below: dropped
        [0.45, 0.45, 0.0],    # split vote: dropped
        [0.0, 0.0, 0.0],      # nobody reached the question: dropped
    ])
    assert gz.assign_labels(votes, 0.9).tolist() == [0, 1, 2, 0, 2, -1, -1, -1]


def test_a_galaxy_qualifying_twice_is_dropped_not_guessed():
    # impossible in a consistent Kaggle table (the three fractions sum to <= 1), but a damaged
    # table must not silently favour one class
    assert gz.assign_labels(np.array([[0.6, 0.7, 0.0], [0.55, 0.0, 0.56]]), 0.51).tolist() == [-1, -1]


def test_a_lower_threshold_keeps_more_galaxies_and_tau_1_only_unanimous_votes():
    votes = np.array([[1.0, 0, 0], [0.99, 0, 0], [0.7, 0, 0], [0, 0.6, 0]])
    assert gz.assign_labels(votes, 1.0).tolist() == [0, -1, -1, -1]
    assert gz.assign_labels(votes, 0.6).tolist() == [0, 0, 0, 1]


@pytest.mark.parametrize("tau", [0.5, 0.3, 0.0, 1.01, -1, float("nan"), "0.9", True])
def test_threshold_outside_half_to_one_is_refused(tau):
    with pytest.raises(UserError, match=r"outside \(0\.5, 1\]"):
        gz.check_threshold(tau)


@pytest.mark.parametrize("tau", [0.500001, 0.9, 1.0, 1])
def test_threshold_inside_half_to_one_is_accepted(tau):
    assert gz.check_threshold(tau) == float(tau)


# ---------------------------------------------------------------- the vote table

def test_vote_table_gives_ids_and_the_three_fractions_exactly(kaggle):
    root, expected = kaggle
    ids, votes = gz.read_solutions(root / gz.SOLUTIONS_CSV)
    assert ids.dtype == np.int64 and votes.dtype == np.float64 and votes.shape == (len(ids), 3)
    labels = gz.assign_labels(votes, 0.9)
    found = {int(i): int(c) for i, c in zip(ids, labels) if c >= 0}
    wanted = {**expected["labels"], **{i: 0 for i in expected["truncated"]}, **{i: 2 for i in expected["corrupt"]}}
    assert found == wanted  # incl. the rows written as exactly "0.9"
    assert set(ids[labels < 0].tolist()) == set(expected["dropped"])


def test_kaggle_column_list_is_the_37_answers():
    assert len(gz.KAGGLE_COLUMNS) == 38 and gz.KAGGLE_COLUMNS[0] == "GalaxyID"
    assert gz.KAGGLE_COLUMNS[1] == "Class1.1" and gz.KAGGLE_COLUMNS[-1] == "Class11.6"


def test_missing_vote_column_is_named(kaggle, tmp_path):
    root, _ = kaggle
    table = tmp_path / gz.SOLUTIONS_CSV
    table.write_bytes((root / gz.SOLUTIONS_CSV).read_bytes())
    rewrite_csv(table, drop=("Class2.1", "Class4.1"))
    with pytest.raises(UserError, match="lacks columns Class2.1, Class4.1"):
        gz.read_solutions(table)


@pytest.mark.parametrize("text, problem", [("", "Class7.1 = ''"), ("1.2", "Class7.1 = '1.2'"),
                                           ("nan", "Class7.1 = 'nan'"), ("high", "Class7.1 = 'high'")])
def test_bad_vote_value_is_reported_with_its_line(kaggle, tmp_path, text, problem):
    root, _ = kaggle
    table = tmp_path / gz.SOLUTIONS_CSV
    table.write_bytes((root / gz.SOLUTIONS_CSV).read_bytes())
    rewrite_csv(table, edit={(2, "Class7.1"): text})
    with pytest.raises(UserError, match=f"line 4: {problem}"):
        gz.read_solutions(table)


def test_repeated_galaxy_id_is_refused(kaggle, tmp_path):
    root, _ = kaggle
    table = tmp_path / gz.SOLUTIONS_CSV
    lines = (root / gz.SOLUTIONS_CSV).read_text().splitlines()
    table.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(UserError, match=f"GalaxyID {lines[1].split(',')[0]} appears 2 times"):
        gz.read_solutions(table)


def test_missing_image_folder_or_table_is_named(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        gz.locate(tmp_path / "nowhere")
    (tmp_path / "training_solutions_rev1.zip").write_bytes(b"PK")  # as Kaggle ships it
    with pytest.raises(UserError, match="no vote table training_solutions_rev1.csv; unzip training_solutions_rev1.zip"):
        gz.locate(tmp_path)
    (tmp_path / gz.SOLUTIONS_CSV).write_text("GalaxyID\n")
    with pytest.raises(UserError, match="no image folder images_training_rev1"):
        gz.locate(tmp_path)
    (tmp_path / "images_training_rev1.zip").write_bytes(b"PK")
    with pytest.raises(UserError, match="unzip images_training_rev1.zip"):
        gz.locate(tmp_path)


# ---------------------------------------------------------------- images

def test_broken_jpegs_are_recognised_and_reported_by_galaxy_id(kaggle):
    root, expected = kaggle
    bad = expected["truncated"] + expected["corrupt"] + [999999]
    good = sorted(expected["labels"])[:3]
    images, problems = gz.load_galaxies(good + bad, root / gz.IMAGES_DIR, crop=212, size=64)
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8
    assert problems == [None, None, None, "truncated", "corrupt", "missing"]
    assert images[:3].max() > 100 and images[3:].max() == 0
    report = gz.skipped_report(np.array(good + bad), problems)
    assert report["count"] == 3
    assert report["truncated"] == expected["truncated"] and report["corrupt"] == expected["corrupt"]
    assert report["missing"] == [999999]


def test_central_crop_is_taken_then_resized(tmp_path):
    image = np.zeros((424, 424, 3), np.uint8)
    image[106:318, 106:318] = (200, 120, 40)   # the central 212 px: a flat colour
    path = tmp_path / "1.jpg"
    path.write_bytes(jpeg_bytes(image, quality=95))
    out, problem = gz.load_galaxy(path, crop=212, size=32)
    assert problem is None and out.shape == (32, 32, 3)
    assert np.abs(out[2:-2, 2:-2].astype(int) - (200, 120, 40)).max() < 12  # none of the black frame
    wide, _ = gz.load_galaxy(path, crop=424, size=32)
    assert wide[0, 0].max() < 12 and np.abs(wide[16, 16].astype(int) - (200, 120, 40)).max() < 12


def test_image_smaller_than_the_crop_is_skipped(tmp_path):
    path = tmp_path / "2.jpg"
    Image.new("RGB", (100, 100)).save(path)
    assert gz.load_galaxy(path, crop=212, size=64) == (None, "too-small")


# ---------------------------------------------------------------- the command's errors

def _one_error_line(out) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    return lines[0]


def test_command_refuses_a_threshold_outside_range_in_one_line(kaggle, tmp_path):
    root, _ = kaggle
    out = run_cli("data", "galaxies", "--galaxy-zoo", root, "--out", tmp_path / "ds",
                  "--set", "galaxy_zoo.threshold=0.5")
    assert "galaxy_zoo.threshold" in _one_error_line(out) and "(0.5, 1]" in out.stderr
    assert not (tmp_path / "ds").exists()


def test_command_names_a_missing_column_in_one_line_and_writes_nothing(kaggle, tmp_path):
    root, _ = kaggle
    broken = tmp_path / "kaggle"
    (broken / gz.IMAGES_DIR).mkdir(parents=True)
    (broken / gz.SOLUTIONS_CSV).write_bytes((root / gz.SOLUTIONS_CSV).read_bytes())
    rewrite_csv(broken / gz.SOLUTIONS_CSV, drop=("Class7.1",))
    out = run_cli("data", "galaxies", "--galaxy-zoo", broken, "--out", tmp_path / "ds")
    assert "lacks column Class7.1" in _one_error_line(out)
    assert not (tmp_path / "ds").exists()


def test_command_names_a_missing_image_folder(tmp_path):
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle" / gz.SOLUTIONS_CSV).write_text(",".join(gz.KAGGLE_COLUMNS) + "\n")
    out = run_cli("data", "galaxies", "--galaxy-zoo", tmp_path / "kaggle", "--out", tmp_path / "ds")
    assert "no image folder images_training_rev1" in _one_error_line(out)


def test_command_keeps_an_existing_dataset_unless_overwrite(kaggle, tmp_path):
    root, expected = kaggle
    ds = tmp_path / "ds"
    assert run_cli("data", "galaxies", "--galaxy-zoo", root, "--out", ds).returncode == 0
    before = (ds / "manifest.json").read_bytes()
    out = run_cli("data", "galaxies", "--synthetic", "60", "--out", ds)
    assert "--overwrite" in _one_error_line(out) and (ds / "manifest.json").read_bytes() == before
    out = run_cli("data", "galaxies", "--synthetic", "60", "--out", ds, "--overwrite")
    assert out.returncode == 0, out.stderr
    manifest = json.loads((ds / "manifest.json").read_text())
    assert manifest["attrs"]["source"] == "synthetic" and "skipped" not in manifest
    assert sum(s["n"] for s in manifest["splits"].values()) == 60
