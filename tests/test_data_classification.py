
import pytest
import torch

from lightcycle.data import CsvDataModule, FolderDataModule
from lightcycle.errors import LightcycleError
from tests.helpers import CLASSES


def _batch(dm):
    x, y = next(iter(dm.train_dataloader()))
    return x, y


def test_image_folder_train_valid_layout(image_folder):
    dm = FolderDataModule(image_folder, size=32, batch_size=8, num_workers=0)
    dm.setup("fit")
    assert dm.classes == sorted(CLASSES)
    assert len(dm.train_samples) == 36 and len(dm.valid_samples) == 12
    x, y = _batch(dm)
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8  # normalised on the device (device_transforms)
    assert dm.batch_transform(x).dtype == torch.float32
    assert y.dtype == torch.long and set(y.tolist()) <= {0, 1, 2}
    vx, _ = next(iter(dm.val_dataloader()))
    assert vx.shape[-2:] == (32, 32)
    task = dm.make_task()
    assert task.class_names == sorted(CLASSES)


def test_flat_folder_is_split_by_valid_pct_with_fixed_seed(flat_folder):
    def split(seed):
        dm = FolderDataModule(flat_folder, size=32, valid_pct=0.2, seed=seed, num_workers=0)
        dm.setup()
        return sorted(s.path.name + s.path.parent.name for s in dm.valid_samples), len(dm.train_samples)

    valid_a, n_train = split(0)
    assert len(valid_a) == 6 and n_train == 24
    assert split(0)[0] == valid_a  # same seed -> same files
    assert split(1)[0] != valid_a


def test_csv_layout_resolves_names_without_extension(csv_folder):
    dm = CsvDataModule(csv_folder, folder="images", size=32, batch_size=4, num_workers=0)
    dm.setup()
    assert dm.classes == sorted(CLASSES)
    assert len(dm.train_samples) + len(dm.valid_samples) == 30
    assert all(s.path.suffix == ".jpg" for s in dm.train_samples)
    x, y = _batch(dm)
    assert x.shape == (4, 3, 32, 32)


def test_csv_labels_follow_rows(csv_folder):
    dm = CsvDataModule(csv_folder, folder="images", size=32, num_workers=0)
    dm.setup()
    for s in dm.train_samples + dm.valid_samples:
        assert dm.classes[s.target] == s.path.stem.rstrip("0123456789")


def test_csv_missing_file_is_reported_with_line(csv_folder):
    with open(csv_folder / "labels.csv", "a") as f:
        f.write("ghost,red\n")
    dm = CsvDataModule(csv_folder, folder="images", size=32, num_workers=0)
    with pytest.raises(LightcycleError, match=r"ghost: file not found \(labels.csv line 32\)"):
        dm.setup()
    skip = CsvDataModule(csv_folder, folder="images", size=32, num_workers=0, on_bad="skip")
    skip.setup()
    assert len(skip.train_samples) + len(skip.valid_samples) == 30


def test_csv_missing_column_is_named(csv_folder):
    dm = CsvDataModule(csv_folder, folder="images", label_col="breed", num_workers=0)
    with pytest.raises(LightcycleError, match=r"labels.csv: missing column\(s\) \['breed'\]"):
        dm.setup()


def test_csv_valid_column_fixes_the_split(csv_folder):
    lines = (csv_folder / "labels.csv").read_text().splitlines()
    out = ["fname,label,is_valid"] + [f"{line},{i % 3 == 0}" for i, line in enumerate(lines[1:])]
    (csv_folder / "labels.csv").write_text("\n".join(out) + "\n")
    dm = CsvDataModule(csv_folder, folder="images", valid_col="is_valid", num_workers=0)
    dm.setup()
    assert len(dm.valid_samples) == 10


def test_truncated_image_is_listed_or_skipped(image_folder):
    bad = image_folder / "train" / "red" / "red_0.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(LightcycleError, match="red_0.jpg"):
        FolderDataModule(image_folder, num_workers=0).setup()
    dm = FolderDataModule(image_folder, num_workers=0, on_bad="skip")
    dm.setup()
    assert len(dm.train_samples) == 35


@pytest.mark.parametrize("case", ["missing", "empty", "one_class"])
def test_bad_roots_fail_clearly(tmp_path, image_folder, case):
    if case == "missing":
        root, message = tmp_path / "nope", "does not exist"
    elif case == "empty":
        root, message = tmp_path / "empty", "is empty"
        root.mkdir()
    else:
        root, message = image_folder / "train" / "red", "at least 2 classes"
    with pytest.raises(LightcycleError, match=message):
        FolderDataModule(root, num_workers=0).setup()


def test_empty_class_folder_is_reported(image_folder):
    (image_folder / "train" / "purple").mkdir()
    with pytest.raises(LightcycleError, match="purple: class folder has no images"):
        FolderDataModule(image_folder, num_workers=0).setup()


def test_bad_settings_fail_before_reading(image_folder):
    with pytest.raises(ValueError, match="data.augment"):
        FolderDataModule(image_folder, augment="sideways")
    with pytest.raises(LightcycleError, match="data.root is not set"):
        FolderDataModule(None)
