"""lightcycle-predict and Predictor: rows per image, probabilities, tags, masks, points, TTA, ensembles, bad files."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightcycle import Prediction, Predictor
from lightcycle.cli.predict import tta_settings
from lightcycle.data.segmentation import load_mask
from lightcycle.errors import LightcycleError
from lightcycle.module import INFERENCE_KEY, VisionModule
from lightcycle.predict import list_inputs, vet_inputs, write_predictions
from tests.helpers import train_checkpoint

REPO = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """(checkpoint, datamodule) of a one-epoch classifier of 3 classes."""
    return train_checkpoint("classification", tmp_path_factory.mktemp("cls"))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "lightcycle.cli.predict", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_checkpoint_records_eval_framing_as_plain_data(classifier):
    ckpt, dm = classifier
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)[INFERENCE_KEY]
    assert stored == {
        "size": 32, "mean": list(dm.normalization.mean), "std": list(dm.normalization.std), "crop_pct": 1.0,
        "augment": "side_on", "max_zoom": 1.1, "resize": "crop", "min_scale": 0.35,  # classification's framing
    }
    assert VisionModule.load(ckpt).inference_config.to_dict() == stored



def test_older_checkpoints_take_the_size_from_the_datamodule_state(classifier, tmp_path):
    ckpt, dm = classifier
    old = torch.load(ckpt, map_location="cpu", weights_only=True)
    del old[INFERENCE_KEY]
    assert old["FolderDataModule"]["size"] == 32
    torch.save(old, tmp_path / "old.ckpt")
    p = Predictor.from_checkpoint(tmp_path / "old.ckpt")  # mean/std from the backbone's pretrained config
    assert p.size == 32 and p.normalization.mean == dm.normalization.mean
    # a checkpoint from before framing was recorded squishes (this one was trained with the crop default)
    squished = Predictor.from_checkpoint(ckpt, resize="squish")
    torch.testing.assert_close(p.predict(dm.valid_samples[0].path).probs, squished.predict(dm.valid_samples[0].path).probs)
    del old["FolderDataModule"]
    torch.save(old, tmp_path / "older.ckpt")
    with pytest.raises(LightcycleError, match="does not record the image size .* pass size=N"):
        Predictor.from_checkpoint(tmp_path / "older.ckpt")
    assert Predictor.from_checkpoint(tmp_path / "older.ckpt", size=32).size == 32


@pytest.mark.slow
def test_cli_folder_gives_one_row_per_image_in_order(classifier, tmp_path):
    """The done-when: a folder of N images gives exactly N rows; single-label probabilities sum to 1."""
    ckpt, dm = classifier
    folder = tmp_path / "photos"
    shutil.copytree(dm.root / "valid", folder)
    (folder / "notes.txt").write_text("not an image")  # ignored, not a row
    n = sum(1 for p in folder.rglob("*.jpg"))
    result = run_cli(f"ckpt={ckpt}", f"inputs={folder}", "output=out/preds.csv", "tta=true", "batch_size=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "out" / "preds.csv")
    classes = dm.make_task().class_names
    assert len(rows) == n
    assert list(rows[0]) == ["file", "label"] + [f"prob_{c}" for c in classes]
    assert [r["file"] for r in rows] == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    for row in rows:
        probs = [float(row[f"prob_{c}"]) for c in classes]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert row["label"] == classes[int(np.argmax(probs))]
    assert not list(tmp_path.glob("outputs")) and not list(tmp_path.glob(".hydra"))  # no run folder litter


@pytest.mark.slow
def test_cli_bad_image_is_one_line_error_naming_every_file(classifier, tmp_path):
    ckpt, dm = classifier
    folder = tmp_path / "photos"
    shutil.copytree(dm.root / "valid" / "red", folder)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    result = run_cli(f"ckpt={ckpt}", f"inputs={folder}", "output=p.json", cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("lightcycle-predict: error:")]
    assert len(errors) == 1 and "2 bad image(s)" in errors[0]
    assert "broken.jpg" in result.stderr and "empty.png" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "p.json").exists()


def test_skip_predicts_the_rest_and_counts(classifier, tmp_path, caplog):
    ckpt, dm = classifier
    folder = tmp_path / "photos"
    shutil.copytree(dm.root / "valid" / "red", folder)
    good = len(list(folder.iterdir()))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    inputs = vet_inputs(list_inputs(folder), "skip", str(folder))
    assert len(inputs.paths) == good and [p.name for p, _ in inputs.problems] == ["broken.jpg"]
    assert "skipped 1 bad image(s)" in caplog.text
    p = Predictor.from_checkpoint(ckpt)
    out = tmp_path / "p.json"
    assert write_predictions(p.task, p.iter_predictions(inputs.paths), inputs.names, out) == good
    records = json.loads(out.read_text())
    assert [r["file"] for r in records] == inputs.names
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5) for r in records)


def test_python_api_unpacks_like_learn_predict(classifier):
    ckpt, dm = classifier
    path = dm.valid_samples[0].path
    p = Predictor.from_checkpoint(ckpt)
    pred = p.predict(path)
    label, index, probs = pred
    assert isinstance(pred, Prediction) and label == p.task.class_names[index] and probs.shape == (3,)
    # Exactly the validation pipeline: the module on the datamodule's eval tensor.
    model = VisionModule.load(ckpt).eval()
    x, _ = dm.val_dataloader().dataset[0]
    with torch.no_grad():
        expected = model(dm.batch_transform(x[None])).softmax(-1)[0]
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=0)
    # PIL images and arrays too; batched files in order.
    torch.testing.assert_close(p.predict(Image.open(path)).probs, probs)
    paths = [s.path for s in dm.valid_samples]
    batched = Predictor.from_checkpoint(ckpt, batch_size=4).predict_files(paths)
    assert [b.file for b in batched] == [str(q) for q in paths]
    torch.testing.assert_close(batched[0].probs, probs, atol=1e-5, rtol=0)


def test_tta_is_deterministic_for_any_batch_size(classifier):
    ckpt, dm = classifier
    paths = [s.path for s in dm.valid_samples]
    a = Predictor.from_checkpoint(ckpt, tta=4, batch_size=1).predict_files(paths)
    b = Predictor.from_checkpoint(ckpt, tta=4, batch_size=5).predict_files(paths)
    plain = Predictor.from_checkpoint(ckpt).predict_files(paths)
    torch.testing.assert_close(torch.stack([x.probs for x in a]), torch.stack([x.probs for x in b]), atol=1e-5, rtol=0)
    assert not torch.allclose(torch.stack([x.probs for x in a]), torch.stack([x.probs for x in plain]))
    assert all(x.probs.sum() == pytest.approx(1.0, abs=1e-5) for x in a)


def test_tta_shorthands():
    assert tta_settings(True)["n"] == 4 and tta_settings(False)["n"] == 0 and tta_settings(2)["n"] == 2
    with pytest.raises(LightcycleError, match="unknown setting"):
        from omegaconf import OmegaConf

        tta_settings(OmegaConf.create({"n": 1, "bogus": 2}))


def test_ensemble_averages_the_snapshots_beside_the_checkpoint(classifier, tmp_path):
    ckpt, dm = classifier
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    main = folder / "last.ckpt"
    shutil.copy(ckpt, main)
    with pytest.raises(LightcycleError, match="no snapshot-cycle"):
        Predictor.from_checkpoint(main, ensemble=True)
    shutil.copy(ckpt, folder / "snapshot-cycle1.ckpt")
    other = torch.load(ckpt, map_location="cpu", weights_only=True)
    other["state_dict"] = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in other["state_dict"].items()}
    torch.save(other, folder / "snapshot-cycle2.ckpt")
    paths = [s.path for s in dm.valid_samples]
    ensemble = Predictor.from_checkpoint(main, ensemble=True)
    assert len(ensemble.models) == 2
    got = torch.stack([x.probs for x in ensemble.predict_files(paths)])
    one = torch.stack([x.probs for x in Predictor.from_checkpoint(folder / "snapshot-cycle1.ckpt").predict_files(paths)])
    two = torch.stack([x.probs for x in Predictor.from_checkpoint(folder / "snapshot-cycle2.ckpt").predict_files(paths)])
    torch.testing.assert_close(got, (one + two) / 2, atol=1e-5, rtol=0)


def test_csv_inputs_resolve_names_and_report_missing(classifier, tmp_path):
    ckpt, dm = classifier
    valid = dm.root / "valid"
    listing = tmp_path / "todo.csv"
    listing.write_text("id,fname\n1,red/red_0\n2,blue/blue_1.jpg\n3,nowhere/missing\n")
    inputs = list_inputs(listing, folder=valid)
    assert inputs.paths == [valid / "red" / "red_0.jpg", valid / "blue" / "blue_1.jpg"]
    assert inputs.names == ["red/red_0", "blue/blue_1.jpg"]
    with pytest.raises(LightcycleError, match=r"missing: file not found \(todo.csv line 4\)"):
        vet_inputs(inputs)
    with pytest.raises(LightcycleError, match="no such file or folder"):
        list_inputs(tmp_path / "nope")


def test_multilabel_tags_use_the_checkpoints_thresholds(tmp_path):
    ckpt, dm = train_checkpoint("multilabel", tmp_path)
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    names = stored["hyper_parameters"]["task"]["class_names"]
    stored["hyper_parameters"]["task"]["thresholds"] = [0.0] + [1.0] * (len(names) - 1)  # first tag always, others never
    edited = tmp_path / "edited.ckpt"
    torch.save(stored, edited)
    out = tmp_path / "tags.csv"
    p = Predictor.from_checkpoint(edited)
    paths = [s.path for s in dm.valid_samples]
    write_predictions(p.task, p.iter_predictions(paths), [q.name for q in paths], out)
    rows = read_csv(out)
    assert len(rows) == len(paths) and all(r["tags"] == names[0] for r in rows)
    assert list(rows[0]) == ["file", "tags"] + [f"prob_{c}" for c in names]


def test_segmentation_masks_at_the_original_size(tmp_path):
    ckpt, dm = train_checkpoint("segmentation", tmp_path)
    p = Predictor.from_checkpoint(ckpt, tta=2)
    paths = [s.path for s in dm.valid_samples]
    out = tmp_path / "seg" / "preds.csv"
    assert write_predictions(p.task, p.iter_predictions(paths), [q.name for q in paths], out) == len(paths)
    for row, path in zip(read_csv(out), paths):
        mask = load_mask(out.parent / row["mask"])
        width, height = Image.open(path).size
        assert row["mask"] == f"preds_masks/{path.stem}_P.png" and mask.shape == (height, width)
        assert mask.max() < len(p.task.class_names)


def test_points_come_back_in_original_pixels(tmp_path):
    ckpt, dm = train_checkpoint("points", tmp_path)
    p = Predictor.from_checkpoint(ckpt)
    dataset = dm.val_dataloader().dataset
    for i, sample in enumerate(dataset.samples):
        _, target = dataset[i]
        width, height = (int(v) for v in target[-1])
        pred = p.decode(target[:-1], (width, height))  # the scaled ground truth maps back to the CSV's pixels
        np.testing.assert_allclose(pred.label.numpy(), np.asarray(sample.target.xy), atol=1e-3)
    rows = [p.predict(s.path) for s in dataset.samples[:2]]
    assert all(r.label.shape == (p.task.num_points, 2) for r in rows)


def test_unusable_settings_fail_clearly(classifier, tmp_path):
    ckpt, _ = classifier
    with pytest.raises(LightcycleError, match="checkpoint .* not found"):
        Predictor.from_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(LightcycleError, match="tta.merge"):
        Predictor.from_checkpoint(ckpt, tta=2, tta_merge="median")
    with pytest.raises(LightcycleError, match="extension must be .csv or .json"):
        write_predictions(Predictor.from_checkpoint(ckpt).task, [], [], tmp_path / "p.txt")
    if not torch.cuda.is_available():
        with pytest.raises(LightcycleError, match="no CUDA GPU"):
            Predictor.from_checkpoint(ckpt, device="cuda")
    with pytest.raises(LightcycleError, match="cannot read image"):
        Predictor.from_checkpoint(ckpt).predict(tmp_path / "nothing.jpg")
