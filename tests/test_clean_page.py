"""The cleaner's page and API in-process (FastAPI's TestClient): paging, filters, files only from inside
data.root, apply through the API, masks drawn; and scores reused only while nothing changed."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lightcycle.clean import FileState, ScoredImage, Scores, SimilarPair
from lightcycle.clean.web import cleaning_app
from tests.helpers import make_camvid, make_classification, make_planet

COMMON = {"size": 32, "batch_size": 2, "num_workers": 0, "backbone": "test_resnet"}
TARGETS = {"classification": "lightcycle.data.FolderDataModule", "multilabel": "lightcycle.data.MultiLabelDataModule",
           "segmentation": "lightcycle.data.SegmentationDataModule"}


def table(task: str, root: Path, rows: list[tuple[str, str, object, object]], classes: list[str],
          companions: dict[str, str] | None = None, **settings) -> Scores:
    """A Scores over real files, as `clean.score` would make it: rows of (split, path, label, prediction),
    the first row the worst; one leak pair between the first training and the first validation row."""
    images = [ScoredImage(key=i, split=split, path=path, label=label, prediction=prediction, loss=float(len(rows) - i),
                          state=FileState.of(root / path), companions=tuple(filter(None, [(companions or {}).get(path)])))
              for i, (split, path, label, prediction) in enumerate(rows)]
    first_valid = next(i.key for i in images if i.split == "valid")
    pairs = [SimilarPair(0, first_valid, 0.99, True, images[0].label != images[first_valid].label),
             SimilarPair(0, 1, 0.5, False, False)]
    data = {"_target_": TARGETS[task], **COMMON, **settings, "root": str(root)}
    return Scores(task=task, classes=classes, root=Path(os.path.abspath(root)), data=data, images=images, pairs=pairs)


def folder_scores(root: Path) -> Scores:
    rows = []
    for split in ("train", "valid"):
        for path in sorted((root / split).rglob("*.jpg")):
            cls = path.parent.name
            rows.append((split, path.relative_to(root).as_posix(), cls, "green" if cls == "red" else cls))
    return table("classification", root, rows, ["blue", "green", "red"])


@pytest.fixture
def folder(tmp_path: Path):
    root = make_classification(tmp_path / "data")
    scores = folder_scores(root)
    return root, scores, TestClient(cleaning_app(scores, journal_dir=tmp_path / "run" / "cleaning"))


def test_page_is_one_offline_file(folder) -> None:
    _, _, client = folder
    html = client.get("/").text
    assert "lightcycle-clean" in html and 'id="apply"' in html
    assert "<script src" not in html and "<link" not in html and "//cdn" not in html  # no CDN, no build step


def test_info_and_pages_worst_first_with_filters(folder) -> None:
    _, scores, client = folder
    info = client.get("/info").json()
    assert info["task"] == "classification" and info["relabel"] == "class"
    assert info["counts"] == {"train": 18, "valid": 6} and info["pairs"] == 2
    page = client.get("/images", params={"limit": 5}).json()
    assert page["total"] == 24 and [r["key"] for r in page["rows"]] == [0, 1, 2, 3, 4]
    assert page["rows"][0]["loss"] > page["rows"][1]["loss"] and page["rows"][0]["applied"] is None
    valid = client.get("/images", params={"split": "valid", "label": "red"}).json()
    assert valid["total"] == 2 and {r["path"] for r in valid["rows"]} == {"valid/red/red_0.jpg", "valid/red/red_1.jpg"}
    predicted = client.get("/images", params={"prediction": "green", "offset": 6, "limit": 100}).json()
    assert predicted["total"] == 16 and len(predicted["rows"]) == 10
    assert client.get("/images", params={"split": "test"}).status_code == 422
    pairs = client.get("/pairs", params={"leak": "true"}).json()
    assert pairs["total"] == 1 and pairs["rows"][0]["a"]["key"] == 0 and pairs["rows"][0]["b"]["split"] == "valid"
    assert client.get("/pairs").json()["total"] == 2


def test_files_only_from_inside_the_root(folder, tmp_path: Path) -> None:
    root, scores, client = folder
    answer = client.get("/file/0")
    assert answer.status_code == 200 and answer.content == (root / scores.images[0].path).read_bytes()
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (root / "train/red/link.jpg").symlink_to(secret)
    scores.images.append(ScoredImage(len(scores.images), "train", "train/red/link.jpg", "red", "red", 0.0, FileState(9, 0)))
    scores.images.append(ScoredImage(len(scores.images), "train", "../secret.txt", "red", "red", 0.0, FileState(9, 0)))
    for key in (len(scores.images) - 2, len(scores.images) - 1):
        refused = client.get(f"/file/{key}")
        assert refused.status_code == 403 and refused.json() == {"error": "not a file inside data.root"}
    assert client.get("/file/999").status_code == 404
    for path in ("/file/..%2F..%2Fsecret.txt", "/file/../../secret.txt", "/file/%2e%2e/secret.txt"):
        assert "not yours" not in client.get(path).text


def test_apply_through_the_api(folder, tmp_path: Path) -> None:
    root, scores, client = folder
    red = next(r for r in scores.images if r.path == "train/red/red_0.jpg")
    blue = next(r for r in scores.images if r.path == "train/blue/blue_1.jpg")
    answer = client.post("/apply", json={"changes": [{"key": red.key, "action": "relabel", "label": "green"},
                                                     {"key": blue.key, "action": "remove"}]})
    assert answer.status_code == 200
    done = answer.json()
    assert sorted(o["path"] for o in done["done"]) == ["train/blue/blue_1.jpg", "train/red/red_0.jpg"]
    assert done["left"] == [] and Path(done["journal"]).parent == tmp_path / "run" / "cleaning"
    assert (root / "train/green/red_0.jpg").is_file() and not (root / "train/blue/blue_1.jpg").exists()
    row = next(r for r in client.get("/images", params={"limit": 100}).json()["rows"] if r["key"] == red.key)
    assert row["label"] == "green" and row["path"] == "train/green/red_0.jpg" and row["applied"]["action"] == "relabel"
    assert client.get(f"/file/{red.key}").content == (root / "train/green/red_0.jpg").read_bytes()
    again = client.post("/apply", json={"changes": [{"key": blue.key, "action": "remove"}]}).json()
    assert again["done"] == [] and "already removed" in again["left"][0]["detail"] and again["journal"] is None
    unknown = client.post("/apply", json={"changes": [{"key": 0, "action": "relabel", "label": "purple"}]}).json()
    assert "'purple' is not one of the classes" in unknown["left"][0]["detail"]
    for bad in ({"changes": [{"key": 0, "action": "delete"}]}, {"changes": [{"key": "x", "action": "remove"}]},
                {"changes": "all"}):
        refused = client.post("/apply", json=bad)
        assert refused.status_code == 422 and "error" in refused.json()


def test_multilabel_tags_through_the_api(tmp_path: Path) -> None:
    root = make_planet(tmp_path / "data", n=12, n_valid=4)
    rows = [("valid" if i >= 8 else "train", f"train/train_{i}.jpg", ["red"] if i % 2 else [], ["red"]) for i in range(12)]
    client = TestClient(cleaning_app(table("multilabel", root, rows, ["green", "red"]), journal_dir=tmp_path / "cleaning"))
    assert client.get("/info").json()["relabel"] == "tags"
    assert client.get("/images", params={"label": "red"}).json()["total"] == 6
    done = client.post("/apply", json={"changes": [{"key": 1, "action": "relabel", "label": ["red", "green"]}]}).json()
    assert done["left"] == [] and "train_1,green red" in (root / "labels.csv").read_text().splitlines()


def test_segmentation_draws_the_mask_and_removes_only(tmp_path: Path) -> None:
    root = make_camvid(tmp_path / "data")
    rows = [("valid" if i >= 9 else "train", f"images/img{i}.jpg", None, None) for i in range(12)]
    masks = {f"images/img{i}.jpg": f"labels/img{i}_P.png" for i in range(12)}
    scores = table("segmentation", root, rows, ["background", "square", "void"], masks, void_code="void")
    client = TestClient(cleaning_app(scores, journal_dir=tmp_path / "cleaning"))
    assert client.get("/info").json()["relabel"] is None
    drawn = client.get("/overlay/3")
    assert drawn.status_code == 200 and drawn.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(drawn.content)) as over, Image.open(root / "images/img3.jpg") as plain:
        assert over.size == plain.size and over.convert("RGB").tobytes() != plain.convert("RGB").tobytes()
    done = client.post("/apply", json={"changes": [{"key": 3, "action": "relabel", "label": "square"},
                                                   {"key": 4, "action": "remove"}]}).json()
    assert [o["key"] for o in done["done"]] == [4] and "removals only" in done["left"][0]["detail"]
    assert not (root / "labels/img4_P.png").exists() and not (root / "images/img4.jpg").exists()


def test_stored_scores_are_reused_until_something_changes(tmp_path: Path, monkeypatch) -> None:
    import importlib

    from lightcycle.clean.stored import scores_for

    scoring = importlib.import_module("lightcycle.clean.stored")  # where scores_for finds `score`

    root = make_classification(tmp_path / "data")
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    calls = []
    monkeypatch.setattr(scoring, "score", lambda *args, **kwargs: calls.append(args) or folder_scores(root))
    first = scores_for(ckpt)
    assert len(calls) == 1 and (tmp_path / "run/cleaning/scores.json").is_file()
    assert scores_for(ckpt).images == first.images and len(calls) == 1  # reloaded, not scored again
    scores_for(ckpt, {"size": 64})
    assert len(calls) == 2  # other data settings
    scores_for(ckpt, {"size": 64})
    assert len(calls) == 2
    (tmp_path / "run/cleaning/20260101-000000.jsonl").write_text("")  # an apply since
    scores_for(ckpt, {"size": 64})
    assert len(calls) == 3
    (root / "train/red/red_0.jpg").write_bytes(b"changed")
    scores_for(ckpt, {"size": 64})
    assert len(calls) == 4
    ckpt.write_bytes(b"retrained weights")
    scores_for(ckpt, {"size": 64})
    assert len(calls) == 5
    scores_for(ckpt, {"size": 64}, rescore=True)
    assert len(calls) == 6


def test_the_generated_demo_is_looked_at_and_apply_says_to_copy_it(tmp_path: Path) -> None:
    """After a default run the page opens on the demo data; Apply is refused in words, nothing moves."""
    root = make_classification(tmp_path / "cache" / "demo" / "classification-v1-seed0")  # where demo_root puts it
    (root / ".complete").write_text('{"version": 1, "task": "classification", "seed": 0, "files": 24}')
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    client = TestClient(cleaning_app(folder_scores(root), journal_dir=tmp_path / "run" / "cleaning"))
    assert client.get("/info").json()["counts"] == {"train": 18, "valid": 6}
    assert client.get("/images", params={"limit": 3}).json()["rows"]
    refused = client.post("/apply", json={"changes": [{"key": 0, "action": "remove"}]})
    assert refused.status_code == 409 and "generated demo data" in refused.json()["error"]
    assert "copy it" in refused.json()["error"]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
