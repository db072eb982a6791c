"""ArrayDataModule and `data=arrays data.path=F.npz` (fastai 0.7's from_arrays): every task, the toolbox
(TTA, precompute, interpretation, prediction), and one clear error per bad key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lightcycle import Predictor
from lightcycle.callbacks import Precompute
from lightcycle.tta import evaluate_tta
from lightcycle.data import ArrayDataModule
from lightcycle.errors import LightcycleError
from lightcycle.interpretation import collect
from lightcycle.module import VisionModule
from tests.helpers import quick_trainer, run_train, train_here

COMMON = dict(size=16, batch_size=8, num_workers=0, backbone="test_resnet")


def colour_arrays(n: int = 24, seed: int = 0, shape: tuple[int, int] = (20, 28)) -> tuple[np.ndarray, np.ndarray]:
    """N x H x W x 3 uint8 pictures whose dominant channel is the class (0, 1, 2)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.random((n, *shape, 3)) * 90).astype(np.uint8)
    x[np.arange(n), :, :, y] += 150
    return x, y


def task_arrays(task: str) -> dict[str, np.ndarray]:
    """x_train, y_train, x_valid, y_valid for `task` on 20x28 pictures with a bright square."""
    rng = np.random.default_rng(1)
    n = 20
    x = (rng.random((n, 20, 28, 3)) * 60).astype(np.uint8)
    corners = rng.integers(0, [12, 20], (n, 2))
    masks = np.zeros((n, 20, 28), np.uint8)
    for i, (top, left) in enumerate(corners):
        x[i, top : top + 8, left : left + 8] = 230
        masks[i, top : top + 8, left : left + 8] = 1
    y = {
        "classification": np.arange(n) % 2,
        "multilabel": np.stack([np.arange(n) % 2, (np.arange(n) // 2) % 2], 1).astype(np.uint8),
        "segmentation": masks,
        "points": (corners[:, ::-1] + 4.0)[:, None, :].astype(np.float32),  # (x, y) of each square's centre
    }[task]
    return {"x_train": x[:16], "y_train": y[:16], "x_valid": x[16:], "y_valid": y[16:]}


@pytest.mark.parametrize("task", ["classification", "multilabel", "segmentation", "points"])
def test_every_task_trains_from_arrays_and_predicts(task, tmp_path):
    arrays = task_arrays(task)
    dm = ArrayDataModule(**arrays, **COMMON)  # task=auto: inferred from y's shape
    dm.setup("fit")
    assert dm.task_name == task and [str(s.path) for s in dm.valid_samples] == [f"x_valid[{i}]" for i in range(4)]
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2)
    trainer = quick_trainer(max_epochs=1, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert all(np.isfinite(v) for v in metrics.values()) and "val_loss" in metrics
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    predictor = Predictor.from_checkpoint(tmp_path / "last.ckpt")
    pred = predictor.predict(arrays["x_valid"][0])  # an HxWx3 uint8 array, as from_arrays data is
    x, _ = dm.dataset(dm.valid_samples[:1], train=False)[0]
    with torch.no_grad():
        np.testing.assert_allclose(pred.probs.numpy(), model.task.activation(model.eval()(dm.batch_transform(x[None])))[0].numpy(), atol=1e-5)


def test_float_channels_first_torch_tensors_equal_uint8_channels_last():
    x, y = colour_arrays()
    as_float = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    a = ArrayDataModule(x, y, classes=["red", "green", "blue"], **COMMON)
    b = ArrayDataModule(as_float, torch.from_numpy(y), classes=np.array(["red", "green", "blue"]), **COMMON)
    a.setup(), b.setup()
    assert a.make_task().class_names == b.make_task().class_names == ["red", "green", "blue"]
    assert len(a.train_samples) == 19 and len(a.valid_samples) == 5  # no x_valid: valid_pct 0.2, seeded
    assert [s.path for s in a.valid_samples] == [s.path for s in b.valid_samples]
    for sa, sb in zip(a.valid_samples, b.valid_samples):
        xa, ya = a.dataset([sa], train=False)[0]
        xb, yb = b.dataset([sb], train=False)[0]
        assert torch.equal(xa, xb) and int(ya) == int(yb)
    grey = ArrayDataModule(x[..., 0], y, **COMMON)  # N x H x W greyscale becomes RGB
    grey.setup()
    assert grey.dataset(grey.valid_samples, train=False)[0][0].shape == (3, 16, 16)


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_is_read_without_pickle_and_bad_keys_are_named(tmp_path):
    x, y = colour_arrays()
    good = _npz(tmp_path / "good.npz", x_train=x, y_train=y, x_valid=x[:6], y_valid=y[:6], classes=np.array(["r", "g", "b"]))
    dm = ArrayDataModule(path=good, **COMMON)
    dm.setup()
    assert dm.make_task().class_names == ["r", "g", "b"] and len(dm.valid_samples) == 6
    evil = tmp_path / "evil.npz"
    np.savez(evil, x_train=x, y_train=y, classes=np.array([object()], dtype=object))
    with pytest.raises(LightcycleError, match=r"evil.npz: key 'classes' holds Python objects, which are not unpickled"):
        ArrayDataModule(path=evil, **COMMON)
    cases = {
        "typo": ({"x_train": x, "y_train": y, "x_val": x}, r"unknown key\(s\) \['x_val'\]"),
        "missing": ({"x_train": x}, r"key 'y_train' is missing"),
        "half": ({"x_train": x, "y_train": y, "x_valid": x}, r"has 'x_valid' but not 'y_valid'"),
    }
    for name, (arrays, message) in cases.items():
        with pytest.raises(LightcycleError, match=message):
            ArrayDataModule(path=_npz(tmp_path / f"{name}.npz", **arrays), **COMMON)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(LightcycleError, match=r"text.npz: not a readable .npz file"):
        ArrayDataModule(path=tmp_path / "text.npz", **COMMON)
    with pytest.raises(LightcycleError, match=r"data.path .*nope.npz: file not found"):
        ArrayDataModule(path=tmp_path / "nope.npz", **COMMON)


def test_bad_shapes_dtypes_lengths_and_ranges_are_one_line_errors():
    x, y = colour_arrays()
    masks = np.zeros((24, 20, 28), np.uint8)
    masks[:, :5, :5] = 1
    cases = [
        (dict(x_train=x.transpose(0, 3, 1, 2), y_train=y), r"x_train: shape \(24, 3, 20, 28\) .*channels first\?"),
        (dict(x_train=x.astype(np.float32) / 255, y_train=y), r"x_train: shape \(24, 20, 28, 3\) .*channels last\?"),
        (dict(x_train=x.astype(np.int64), y_train=y), r"x_train: dtype int64 is not an image type"),
        (dict(x_train=x.transpose(0, 3, 1, 2) / 255 * 4 - 2, y_train=y), r"x_train: float images must be in \[0, 1\], got values from -2"),
        (dict(x_train=x, y_train=y[:-1]), r"y_train: has 23 labels but x_train has 24 images"),
        (dict(x_train=x, y_train=y, x_valid=x[:4], y_valid=y[:3]), r"y_valid: has 3 labels but x_valid has 4 images"),
        (dict(x_train=x, y_train=y.astype(np.float32)), r"y_train: class indices must be integers, got dtype float32"),
        (dict(x_train=x, y_train=y, classes=["a", "b"]), r"y_train: value\(s\) \[2\] are not class indices of the 2 classes \(a, b: 0..1\)"),
        (dict(x_train=x, y_train=y, x_valid=x[:2], y_valid=np.array([0, 5]), classes=list("rgb")),
         r"y_valid: value\(s\) \[5\] are not class indices of the 3 classes"),
        (dict(x_train=x, y_train=-y), r"y_train: value\(s\) \[-2, -1\] are negative; class indices count from 0"),
        (dict(x_train=x, y_train=np.zeros(24, int)), r"y_train: needs at least 2 classes, found \['0'\]"),
        (dict(x_train=x, y_train=np.full((24, 3), 2)), r"y_train: multi-label targets must be 0 or 1"),
        (dict(x_train=x, y_train=np.ones((24, 3)), classes=["a", "b"]), r"classes: has 2 names for 3 tags"),
        (dict(x_train=x, y_train=masks[:, :10]), r"y_train: shape \(24, 10, 28\) is none of"),
        (dict(x_train=x, y_train=masks[:, :10], task="segmentation"), r"y_train: masks must be N x 20 x 28"),
        (dict(x_train=x, y_train=masks + 3, classes=["a", "b"]), r"y_train: value\(s\) \[3, 4\] are not mask codes of the 2 classes"),
        (dict(x_train=x, y_train=np.full((24, 1, 2), 40.0)), r"y_train\[0\]: point 0 \(40, 40\) is outside the 28x20 image \(24 image"),
        (dict(x_train=x, y_train=np.full((24, 1, 2), np.nan)), r"y_train: point coordinates are not all finite"),
        (dict(x_train=x, y_train=y, task="regression"), r"data.task must be one of auto, classification"),
        (dict(x_train=x, y_train=masks, void_code="edge"), r"data.void_code='edge' is not in classes"),
        (dict(x_train=x, y_train=y, x_valid=x), r"give x_valid and y_valid together"),
        (dict(x_train="pictures.png", y_train=y), r"x_train: expected a numpy array or torch tensor, got str"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LightcycleError, match=message) as info:
            ArrayDataModule(**kwargs, **COMMON)
        assert "\n" not in str(info.value)


def test_precompute_caches_arrays_by_their_hash_and_tta_and_interpretation_work(tmp_path):
    x, y = colour_arrays(30)
    make = lambda xs: ArrayDataModule(xs, y, xs[:9], y[:9], classes=["r", "g", "b"], **COMMON)  # noqa: E731
    dm = make(x)
    dm.setup("fit")
    same, changed = make(x.copy()), make(np.flip(x, 0).copy())
    same.setup(), changed.setup()
    assert dm.data_signature() == same.data_signature() != changed.data_signature()
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2)
    callback = Precompute(cache_dir=tmp_path / "cache")
    quick_trainer(max_epochs=2, callbacks=[callback]).fit(model, datamodule=dm)
    assert callback.folder is not None and (callback.folder / "done").is_file()
    assert np.load(callback.folder / "train_features.npy").shape[0] == 30
    tta = evaluate_tta(model, model.task, dm, n=2)  # training-transform views read the arrays too
    assert set(tta) >= {"tta_loss", "tta_accuracy"}
    result = collect(model, dm)
    worst = [str(result.files[i]) for i in result.top_losses(3)]
    assert all(name.startswith("x_valid[") and name.endswith("]") for name in worst)


@pytest.mark.slow
def test_cli_trains_from_an_npz(tmp_path, monkeypatch, capsys):
    x, y = colour_arrays(24)
    npz = _npz(tmp_path / "colours.npz", x_train=x, y_train=y, x_valid=x[:6], y_valid=y[:6], classes=np.array(["r", "g", "b"]))
    run = tmp_path / "run"
    done = run_train(["data=arrays", f"data.path={npz}", "data.size=16", "data.batch_size=8", "data.num_workers=0",
                      "data.resize=crop", "model.backbone=test_resnet", "model.pretrained=false", "trainer.max_epochs=1",
                      "trainer.accelerator=cpu", "tta.n=2", "interpret.top_k=2"], run)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val_accuracy", "tta_accuracy"} <= set(metrics)
    top = (run / "interpret" / "top_losses.csv").read_text()
    assert "x_valid[" in top
    # the two user errors: the same entry point in this process (an interpreter start-up each spared)
    capsys.readouterr()
    code = train_here(["data=arrays", f"data.path={tmp_path / 'missing.npz'}", "trainer.accelerator=cpu"], tmp_path / "bad",
                      monkeypatch)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"lightcycle-train: error: data.path {tmp_path / 'missing.npz'}: file not found" in err
    code = train_here(["data=arrays", "trainer.accelerator=cpu"], tmp_path / "unset", monkeypatch)
    assert code == 1 and "lightcycle-train: error: data.path is not set" in capsys.readouterr().err


def _digit_like(n: int = 6, side: int = 8) -> np.ndarray:
    """N x side x side uint8 strokes on black, like scikit-learn's 8x8 digits."""
    rng = np.random.default_rng(3)
    x = np.zeros((n, side, side), np.uint8)
    for i in range(n):
        x[i, rng.integers(1, 3):rng.integers(5, 8), rng.integers(2, 4)] = 255
        x[i, rng.integers(2, 6), 1:rng.integers(4, 8)] = rng.integers(120, 255)
    return x


def test_a_small_array_is_framed_like_its_enlarged_file():
    """An 8x8 array at data.size=32: validation and training inputs equal (within the two bicubic filters'
    few grey levels) those of the same picture saved as a 32x32 file (PIL bicubic), where framing it
    straight from 8 px showed 8x8 area-averaged blocks in validation and bilinear crops in training."""
    from PIL import Image

    x = _digit_like()
    y = np.arange(len(x)) % 2
    small = ArrayDataModule(x[..., None], y, x[..., None], y, size=32, batch_size=2, num_workers=0,
                            augment="none", min_scale=1.0, backbone="test_resnet", device_transforms=True)
    files = np.stack([np.asarray(Image.fromarray(p).resize((32, 32), Image.Resampling.BICUBIC)) for p in x])
    large = ArrayDataModule(files[..., None], y, files[..., None], y, size=32, batch_size=2, num_workers=0,
                            augment="none", min_scale=1.0, backbone="test_resnet", device_transforms=True)
    assert small.enlarge_to() == 32 and large.enlarge_to() == 0
    for kind in ("eval_transform", "train_transform"):
        for picture, enlarged in zip(small.images["x_train"], large.images["x_train"]):
            seen = getattr(small, kind)()(image=picture)["image"].float()
            expected = getattr(large, kind)()(image=enlarged)["image"].float()
            assert seen.shape == expected.shape == (3, 32, 32)
            assert (seen - expected).abs().mean() < 4, kind  # framed from 8 px: 15-20 grey levels apart


def test_enlarging_small_arrays_moves_masks_and_points_with_the_picture():
    import albumentations as A

    from lightcycle.data.framing import EnlargeSmall

    image = np.zeros((8, 10, 3), np.uint8)
    mask = np.zeros((8, 10), np.uint8)
    mask[2:4, 5:7] = 1
    enlarge = A.Compose([EnlargeSmall(32)], keypoint_params=A.KeypointParams(format="xy"))
    out = enlarge(image=image, mask=mask, keypoints=[(5.0, 2.0)])
    assert out["image"].shape[:2] == (32, 40) and out["mask"].shape == (32, 40)
    assert set(np.unique(out["mask"])) == {0, 1} and out["mask"][8:16, 20:28].all()  # nearest, 4x
    assert np.allclose(out["keypoints"][0][:2], (20.0, 8.0))
    assert EnlargeSmall(8)(image=image)["image"] is image  # large enough already: untouched
