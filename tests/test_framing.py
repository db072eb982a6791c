"""Framing (data.resize=crop|pad|squish, data.pad_mode, data.min_scale): what the input shows, that masks
and points move with it, that predictions map back to the original picture, and that the checkpoint,
the export JSON and the standalone ONNX runner frame images exactly like validation."""

from __future__ import annotations

import runpy
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from lightcycle import Predictor
from lightcycle.data import PointsDataModule, SegmentationDataModule
from lightcycle.data.base import ImageDataModule, Sample
from lightcycle.data.framing import Framing, Window
from lightcycle.data.points import PointsTarget, scale_points
from lightcycle.data.transforms import Normalization, eval_transform, train_transform
from lightcycle.errors import LightcycleError
from lightcycle.metrics import PointDistance
from lightcycle.module import VisionModule
from lightcycle.predict.per_task import task_predictions
from lightcycle.tasks import PointsTask, SegmentationTask
from tests.helpers import make_biwi, make_camvid, quick_trainer

RUNNER = Path(__file__).resolve().parents[1] / "src" / "lightcycle" / "onnx_predict.py"
NORM = Normalization()
FRAMINGS = [Framing("squish"), Framing("crop"), Framing("pad", "reflect"), Framing("pad", "zeros")]


def columns(height: int, width: int) -> np.ndarray:
    """Each pixel's red value is its column, green its row: what a frame shows can be read off."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[..., 0] = np.arange(width)[None, :]
    arr[..., 1] = np.arange(height)[:, None]
    return arr


def keypoints(transform: A.Compose, image: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    out = transform(image=image, keypoints=points)
    return np.asarray(out["keypoints"], dtype=np.float64)[:, :2]


def test_settings_fail_clearly():
    with pytest.raises(LightcycleError, match=r"data.resize must be one of crop, pad, squish, got 'fit'"):
        Framing("fit")
    with pytest.raises(LightcycleError, match=r"data.pad_mode must be one of reflect, zeros, got 'border'"):
        Framing("pad", "border")
    for bad in (0.0, 1.5, -0.1, "0.5"):
        with pytest.raises(LightcycleError, match=r"data.min_scale must be in \(0, 1\]"):
            Framing("crop", min_scale=bad)
    with pytest.raises(LightcycleError, match="data.resize must be one of"):
        PointsDataModule("/tmp", resize="stretch")
    assert Framing.from_config({}) == Framing("squish")  # checkpoints saved before framing was recorded
    assert Framing.from_config(Framing("pad", "zeros", 0.5).to_config()) == Framing("pad", "zeros", 0.5)


@pytest.mark.parametrize("framing", FRAMINGS, ids=lambda f: f"{f.resize}-{f.pad_mode}")
@pytest.mark.parametrize("shape", [(60, 90), (90, 61)])
def test_eval_input_shows_its_window_and_points_map_back_exactly(framing, shape):
    height, width = shape
    image = columns(height, width)
    window = framing.window(width, height)
    points = [(0.0, 0.0), (5.5, 7.25), (width - 1.0, height - 1.0), (width / 2, height / 3)]
    moved = keypoints(eval_transform(30, NORM, keypoints=True, framing=framing), image, points)
    np.testing.assert_allclose(window.to_original(moved, 30), points, atol=1e-4)
    if framing.resize == "crop":
        side = min(width, height)
        assert window == Window((width - side) // 2, (height - side) // 2, side, side)
        assert not window.covers(width, height)
    elif framing.resize == "pad":
        side = max(width, height)
        assert window == Window(-((side - width) // 2), -((side - height) // 2), side, side)
        assert window.covers(width, height)
    else:
        assert window == Window(0, 0, width, height)


def test_crop_is_random_in_training_and_central_in_evaluation():
    image = columns(40, 100)  # red = column index
    crop = Framing("crop")
    eval_view = crop.eval_steps()[0](image=image)["image"]
    assert eval_view.shape == (40, 40, 3) and eval_view[0, 0, 0] == 30  # (100 - 40) // 2
    train = A.Compose(crop.train_steps(40))
    lefts = {int(train(image=image)["image"][0, 0, 0]) for _ in range(40)}
    assert len(lefts) > 10 and min(lefts) >= 0 and max(lefts) <= 60
    pad = Framing("pad", "zeros")
    padded = pad.eval_steps()[0](image=image)["image"]
    assert padded.shape == (100, 100, 3) and padded[:30].max() == 0 and padded[70:].max() == 0
    assert (padded[30:70, :, 0] == image[..., 0]).all()
    placed = {int(np.argmax(A.Compose(pad.train_steps(100))(image=image + 1)["image"][:, 0, 1] > 0)) for _ in range(30)}
    assert len(placed) > 5  # training pads at random places, as fastai does


@pytest.mark.parametrize("framing", FRAMINGS + [Framing("crop", min_scale=0.3), Framing("pad", min_scale=0.5),
                                                Framing("squish", min_scale=0.4)], ids=str)
def test_masks_and_points_move_with_every_training_frame(framing):
    """A mask painted from the image's own pixels must still match them after any random framing."""
    height, width = 48, 80
    rng = np.random.default_rng(0)
    image = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(6):
        y, x = int(rng.integers(0, height - 12)), int(rng.integers(0, width - 12))
        image[y : y + 12, x : x + 12] = 200
        mask[y : y + 12, x : x + 12] = 1
    transform = train_transform(40, NORM, "none", framing=framing)
    for seed in range(10):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        bright = out["image"][0].numpy() > (100 / 255 - NORM.mean[0]) / NORM.std[0]  # half-way between 0 and 200
        assert out["image"].shape == (3, 40, 40) and (bright == (out["mask"].numpy() == 1)).mean() > 0.93
    # points: each on a bright marker, one near the corner that a crop can cut off; both are kept, and
    # wherever a frame (and side_on's flip, rotation and zoom) puts a point inside it, its marker is there
    points = [(40.0, 24.0), (4.0, 4.0)]
    marked = np.zeros((height, width, 3), np.uint8)
    for x, y in points:
        marked[int(y) - 4 : int(y) + 5, int(x) - 4 : int(x) + 5] = 255
    kp_transform = train_transform(24, NORM, "side_on", framing=framing, keypoints=True)
    inside = 0
    for seed in range(20):
        kp_transform.set_random_seed(seed)
        out = kp_transform(image=marked, keypoints=points)
        moved = np.asarray(out["keypoints"], dtype=np.float64)[:, :2]
        assert moved.shape == (2, 2)
        grey = out["image"][0].numpy() * NORM.std[0] + NORM.mean[0]
        for x, y in moved:
            if 0 <= x < 24 and 0 <= y < 24:
                inside += 1
                near = grey[max(int(y) - 1, 0) : int(y) + 2, max(int(x) - 1, 0) : int(x) + 2]
                assert near.max() > 0.5, (seed, x, y)  # the marker, squished to 3 x 4.5 px at least
    assert inside >= 20


def test_reflect_padding_does_not_copy_points():
    """albumentations would add a copy of every point in each mirrored tile; the real point stays one."""
    transform = eval_transform(32, NORM, keypoints=True, framing=Framing("pad", "reflect"))
    moved = keypoints(transform, columns(20, 80), [(10.0, 10.0), (70.0, 2.0)])
    np.testing.assert_allclose(moved, [[4.0, 16.0], [28.0, 12.8]], atol=1e-5)


def test_zero_padding_labels_mask_border_void(tmp_path):
    dm = SegmentationDataModule(make_camvid(tmp_path / "camvid"), size=32, num_workers=0, void_code="void",
                                resize="pad", pad_mode="zeros")
    dm.setup("fit")
    assert dm.pad_mask_fill() == 2
    x, mask = dm.dataset(dm.valid_samples[:1], train=False)[0]
    # 36x44 padded to 44x44 (4 rows each side), then 32x32: the top and bottom rows are border
    assert (mask[:2] == 2).all() and (mask[-2:] == 2).all()
    assert (x[:, :2] == x[:, :1, :1]).all()  # black after normalisation: one value per channel


@pytest.mark.parametrize("resize", ["squish", "crop", "pad"])
def test_points_targets_and_distance_are_in_original_pixels(tmp_path, resize):
    dm = PointsDataModule(make_biwi(tmp_path / "biwi"), size=32, num_workers=0, resize=resize)
    dm.setup("fit")
    metric = PointDistance()
    for sample in dm.valid_samples:
        x, y = dm.dataset([sample], train=False)[0]
        w, h = sample.target.size
        window = dm.framing.window(w, h)
        np.testing.assert_allclose(y[-1].numpy(), [window.width, window.height], rtol=1e-5)
        # a prediction one input pixel to the right is window.width / 32 original pixels off
        shifted = y[:-1].clone()
        shifted[:, 0] += 2 / 32
        metric.reset()
        metric.update(shifted[None], y[None])
        assert float(metric.compute()) == pytest.approx(window.width / 32, rel=1e-4)
        # the task's prediction returns the CSV's own pixels exactly through the framing
        pixels, _ = task_predictions(PointsTask(2)).prediction(y[:-1], (w, h), 32, window)
        np.testing.assert_allclose(pixels.numpy(), np.asarray(sample.target.xy), atol=1e-3)


def test_segmentation_masks_come_back_at_the_original_size_through_padding():
    task = SegmentationTask(["bg", "fg"])
    height, width = 30, 90  # padded to 90x90, input 30x30: one input pixel = 3 original pixels
    framing = Framing("pad", "reflect")
    mask = np.zeros((height, width), np.uint8)
    mask[6:24, 12:48] = 1
    framed = eval_transform(30, NORM, framing=framing)(image=np.zeros((height, width, 3), np.uint8), mask=mask)["mask"]
    probs = torch.nn.functional.one_hot(torch.as_tensor(framed).long(), 2).permute(2, 0, 1).float()
    pred, _ = task_predictions(task).prediction(probs, (width, height), 30, framing.window(width, height))
    assert tuple(pred.shape) == (height, width)
    assert (pred.numpy() == mask).mean() > 0.98  # only bilinear edges may differ
    with pytest.raises(LightcycleError, match="centre crop .* predict with resize=pad or resize=squish"):
        task.check_framing(Framing("crop"), "model.ckpt")
    with pytest.raises(LightcycleError, match="cannot be predicted"):
        task_predictions(task).prediction(probs, (width, height), 30, Framing("crop").window(width, height))


def _fit(dm, root: Path) -> Path:
    dm.setup("fit")
    model = VisionModule(dm.make_task(), backbone="test_resnet", pretrained=False, lr=1e-2)
    trainer = quick_trainer(max_epochs=1, default_root_dir=root, limit_train_batches=1)
    trainer.fit(model, datamodule=dm)
    path = root / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_checkpoint_records_framing_and_predictor_frames_like_validation(tmp_path):
    dm = PointsDataModule(make_biwi(tmp_path / "biwi"), size=32, batch_size=4, num_workers=0, backbone="test_resnet",
                          resize="pad", pad_mode="zeros", min_scale=0.8)
    ckpt = _fit(dm, tmp_path)
    stored = torch.load(ckpt, weights_only=True)["lightcycle_inference"]
    assert (stored["resize"], stored["pad_mode"], stored["min_scale"]) == ("pad", "zeros", 0.8)
    predictor = Predictor.from_checkpoint(ckpt)
    assert predictor.framing == dm.framing
    model = predictor.models[0]
    for sample in dm.valid_samples:
        x, _ = dm.dataset([sample], train=False)[0]
        with torch.no_grad():
            expected = model.task.activation(model(dm.batch_transform(x[None])))[0]
        got = predictor.predict(sample.path)
        np.testing.assert_allclose(got.probs.numpy(), expected.numpy(), atol=1e-5)  # the same input tensor
        window = dm.framing.window(*sample.target.size)
        from lightcycle.data.points import unscale_points

        np.testing.assert_allclose(got.label.numpy(), window.to_original(unscale_points(expected.double(), 32, 32), 32), atol=1e-3)


def test_crop_trained_segmentation_predicts_only_when_told_another_framing(tmp_path):
    dm = SegmentationDataModule(make_camvid(tmp_path / "camvid"), size=32, batch_size=4, num_workers=0,
                                backbone="test_resnet", void_code="void", resize="crop")
    ckpt = _fit(dm, tmp_path)
    with pytest.raises(LightcycleError, match=r"last.ckpt: segmentation masks cannot be predicted through a centre crop"):
        Predictor.from_checkpoint(ckpt)
    predictor = Predictor.from_checkpoint(ckpt, resize="pad")
    pred = predictor.predict(dm.valid_samples[0].path)
    assert tuple(pred.label.shape) == (36, 44)


@pytest.mark.parametrize("framing", FRAMINGS, ids=lambda f: f"{f.resize}-{f.pad_mode}")
@pytest.mark.parametrize("shape", [(40, 48), (70, 100), (48, 40), (20, 96), (31, 45)])
def test_onnx_runner_preprocessing_equals_the_eval_transform(framing, shape):
    """lightcycle.onnx_predict (numpy + Pillow only) frames and resizes like lightcycle, within one grey level."""
    runner = runpy.run_path(str(RUNNER))
    rng = np.random.default_rng(sum(shape))
    arr = (rng.random((*shape, 3)) * 255).astype(np.uint8)
    ours = eval_transform(32, NORM, framing=framing)(image=arr)["image"].numpy()
    spec = {"size": 32, "scale": 1 / 255, "mean": list(NORM.mean), "std": list(NORM.std),
            "resize": framing.resize, "pad_mode": framing.pad_mode}
    theirs, window = runner["preprocess"](Image.fromarray(arr), spec)
    assert window == tuple(vars(framing.window(shape[1], shape[0])).values())
    grey_levels = np.abs(ours - theirs) * np.asarray(NORM.std)[:, None, None] * 255
    assert grey_levels.max() <= 1.0 + 1e-4


def test_array_datamodules_frame_like_the_task_own_datamodule():
    """ArrayDataModule's framing None means the framing of the task's own DataModule (one owner:
    data/framing.py; conf/data/*.yaml is compared with the signatures in tests/test_defaults.py)."""
    from lightcycle.data import ArrayDataModule, FolderDataModule, MultiLabelDataModule
    from lightcycle.data.framing import CLASSIFICATION_FRAMING

    x = np.zeros((4, 16, 16, 3), np.uint8)
    labels = {"classification": np.array([0, 1, 0, 1]), "multilabel": np.array([[1, 0], [0, 1], [1, 1], [0, 1]], np.float32),
              "segmentation": np.tile(np.arange(16) % 2, (4, 16, 1)).astype(np.int64), "points": np.full((4, 1, 2), 8.0, np.float32)}
    owners = {"classification": FolderDataModule, "multilabel": MultiLabelDataModule,
              "segmentation": SegmentationDataModule, "points": PointsDataModule}
    for task, cls in owners.items():
        arrays = ArrayDataModule(x, labels[task], x, labels[task], task=task, size=16, num_workers=0)
        assert arrays.framing == cls(Path("unused"), size=16).framing, task
    assert FolderDataModule(Path("unused")).framing == CLASSIFICATION_FRAMING != ImageDataModule(Path("unused")).framing


def test_distance_of_points_outside_a_crop_keeps_them(tmp_path):
    """A point outside the centre crop stays a target outside [-1, 1], as with any augmentation today."""
    dm = PointsDataModule(make_biwi(tmp_path / "biwi"), size=32, num_workers=0, resize="crop")
    dm.setup("fit")
    target = PointsTarget(((1.0, 20.0), (47.0, 20.0)), (48, 40))
    image = np.zeros((40, 48, 3), np.uint8)
    x, y = PointsDataModule.encode(image, Sample(Path("a.jpg"), target), dm.eval_transform())
    assert y.shape == (3, 2) and y[0, 0] < -1 and y[1, 0] > 1
    np.testing.assert_allclose(y[:2].numpy(), scale_points(np.asarray([[-3.0, 20.0], [43.0, 20.0]]) * 0.8, 32, 32), atol=1e-5)


@pytest.mark.parametrize("resize", ["crop", "pad"])
def test_exported_points_model_and_runner_answer_in_original_pixels(tmp_path, resize, capsys):
    """The export JSON records the framing; the standalone runner frames non-square pictures like the
    Predictor and maps points back through the same window."""
    pytest.importorskip("onnxruntime")
    import json

    from lightcycle.export import export

    dm = PointsDataModule(make_biwi(tmp_path / "biwi"), size=32, batch_size=4, num_workers=0, backbone="test_resnet",
                          resize=resize, head="pooled", y_range=[-1.1, 1.1])
    ckpt = _fit(dm, tmp_path)
    result = export(ckpt, "onnx")
    spec = json.loads(result.config.read_text())["input"]
    assert (spec["resize"], spec["pad_mode"]) == (resize, "reflect")
    files = [str(s.path) for s in dm.valid_samples]  # 48x40 and 32x32 pictures: the runner's resize is exact there
    runpy.run_path(str(RUNNER), run_name="onnx_predict")["main"]([str(result.model), *files])
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predictor = Predictor.from_checkpoint(ckpt)
    for answer, file in zip(answers, files):
        np.testing.assert_allclose(answer["points"], predictor.predict(file).label.numpy(), atol=1e-3)
