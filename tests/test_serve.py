"""lightcycle-serve's JSON API for every task: the same answers as lightcycle-predict, /info, /health,
the OpenAPI page, every kind of bad request, the command line's errors, and SIGTERM with requests in flight."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from tests.serving import HOST, Served, multipart

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("classification", "multilabel", "segmentation", "points")
IMAGES = {"classification": "valid/*/*.jpg", "multilabel": "train/*.jpg", "segmentation": "images/*.jpg", "points": "images/*.jpg"}


def predict_records(ckpt: Path, inputs: Path, output: Path) -> list[dict]:
    """What `lightcycle-predict ckpt=... inputs=... output=x.json` writes (its code path, in this process)."""
    from lightcycle.cli.predict import predict

    cfg = OmegaConf.load(ROOT / "conf" / "predict.yaml")
    for key in ("defaults", "hydra"):
        cfg.pop(key)
    cfg.ckpt, cfg.inputs, cfg.output = str(ckpt), str(inputs), str(output)
    predict(cfg)
    return json.loads(output.read_text())


def pick_images(data_root: Path, task: str, folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True)
    for path in sorted(data_root.glob(IMAGES[task]))[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnx", "torch"])
@pytest.mark.parametrize("task", TASKS)
def test_answers_equal_lightcycle_predict(task, runtime, demo_checkpoints, served, request, tmp_path):
    """Both runtimes answer as lightcycle-predict: the default servers run ONNX Runtime (runtime=auto on
    a CPU), `served_torch` the torch model."""
    ckpt, data_root = demo_checkpoints[task]
    inputs = pick_images(data_root, task, tmp_path / "inputs")
    expected = predict_records(ckpt, inputs, tmp_path / "predictions.json")
    server = (served if runtime == "onnx" else request.getfixturevalue("served_torch")).get(task)
    status, info = server.request("GET", "/info")
    assert json.loads(info)["runtime"] == runtime
    for record in expected:
        for raw in (False, True):
            status, answer = server.predict_file(inputs / record["file"], raw=raw)
            assert status == 200, answer
            assert answer["file"] == (record["file"] if not raw else "upload")
            if task in ("classification", "multilabel"):
                assert answer["probabilities"].keys() == record["probabilities"].keys()
                np.testing.assert_allclose(list(answer["probabilities"].values()), list(record["probabilities"].values()), atol=1e-5)
                key = "label" if task == "classification" else "tags"
                assert answer[key] == record[key]
            if task == "multilabel":
                from lightcycle.module import VisionModule

                thresholds = VisionModule.load(ckpt).task.decision_thresholds
                assert list(answer["thresholds"].values()) == pytest.approx(thresholds)
            if task == "segmentation":
                mask = png_pixels(base64.b64decode(answer["mask"]))
                written = png_pixels((tmp_path / record["mask"]).read_bytes())
                np.testing.assert_array_equal(mask, written)
                assert mask.shape == Image.open(inputs / record["file"]).size[::-1]  # original size
                counts = np.bincount(mask.ravel(), minlength=len(answer["codes"])) / mask.size
                assert list(answer["shares"].values()) == pytest.approx(counts.tolist())
            if task == "points":
                np.testing.assert_allclose(answer["points"], record["points"], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_info_health_and_openapi(task, demo_checkpoints, served):
    from lightcycle.module import VisionModule

    ckpt, _ = demo_checkpoints[task]
    server = served.get(task)
    status, body = server.request("GET", "/info")
    info = json.loads(body)
    model = VisionModule.load(ckpt)
    assert status == 200
    assert info["task"] == model.task.name
    assert info["outputs"] == model.task.output_names
    assert info["input_size"] == model.inference_config.size == 32
    assert info["framing"] == model.inference_config.framing.resize
    assert info["backbone"] == "test_resnet"
    assert info["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert info["runtime"] == "onnx"  # runtime=auto on a CPU with onnxruntime installed
    assert server.request("GET", "/health") == (200, b"ok")
    status, body = server.request("GET", "/openapi.json")
    assert status == 200 and "/predict" in json.loads(body)["paths"]
    assert server.request("GET", "/docs")[0] == 200


def image_bytes(array: np.ndarray, fmt: str, mode: str | None = None, **save) -> bytes:
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save)
    return buffer.getvalue()


@pytest.mark.slow
def test_training_decodes_every_mode(demo_checkpoints, served, tmp_path):
    """CMYK, 16-bit, palette and EXIF-rotated uploads are decoded as training decodes files: the
    answers equal lightcycle-predict's on the same files."""
    ckpt, data_root = demo_checkpoints["classification"]
    rng = np.random.default_rng(3)
    arr = (rng.random((40, 48, 3)) * 90).astype(np.uint8)
    arr[:20, :, 0] += 150
    inputs = tmp_path / "modes"
    inputs.mkdir()
    (inputs / "cmyk.jpg").write_bytes(image_bytes(arr, "JPEG", "CMYK"))
    grey16 = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    assert grey16.mode.startswith("I;16")
    grey16.save(inputs / "grey16.png")
    (inputs / "palette.png").write_bytes(image_bytes(arr, "PNG", "P"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to be upright
    (inputs / "rotated.jpg").write_bytes(image_bytes(arr, "JPEG", exif=exif.tobytes()))
    expected = {r["file"]: r for r in predict_records(ckpt, inputs, tmp_path / "modes.json")}
    server = served.get("classification")
    for name, record in expected.items():
        status, answer = server.predict_file(inputs / name)
        assert status == 200, answer
        np.testing.assert_allclose(list(answer["probabilities"].values()), list(record["probabilities"].values()), atol=1e-5)


def bomb_png(side: int) -> bytes:
    """A PNG whose header claims side x side pixels (a valid IHDR) while its data holds 8 x 8."""
    png = bytearray(image_bytes(np.zeros((8, 8, 3), np.uint8), "PNG"))
    png[16:24] = side.to_bytes(4, "big") * 2
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    return bytes(png)


def refusal(status: int, body: bytes) -> str:
    """The one-line JSON error of a refused request (and no traceback)."""
    text = body.decode()
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return json.loads(text)["error"]


@pytest.mark.slow
def test_bad_requests_are_refused_and_serving_goes_on(demo_checkpoints, served, tmp_path):
    ckpt, data_root = demo_checkpoints["classification"]
    server = served.get("classification")  # max_upload_mb=0.05, data.max_pixels=10000
    good = sorted(data_root.glob("valid/*/*.jpg"))[0]
    good_bytes = good.read_bytes()
    refused_before = server.log.read_text().count("refused POST /predict")  # the shared server may have refused others
    noise = np.random.default_rng(0).integers(0, 255, (150, 150, 3), dtype=np.uint8)
    cases = {
        "not an image": (b"hello, this is text", 400, "cannot read image"),
        "truncated": (good_bytes[: len(good_bytes) // 2], 400, "cannot read image"),
        "empty": (b"", 400, "empty upload"),
        "over max_upload_mb": (image_bytes(noise, "PNG") * 2, 413, "max_upload_mb"),
        "over max_pixels": (image_bytes(np.zeros((120, 120, 3), np.uint8), "PNG"), 413, "more than the limit of 10000"),
        "a bomb's header": (bomb_png(100_000), 413, "decompression bomb"),
    }
    for what, (data, status, words) in cases.items():
        for raw in (True, False):
            if raw:
                got = server.request("POST", "/predict", data, {"Content-Type": "application/octet-stream"})
            else:
                form, ctype = multipart("x.png", data)
                got = server.request("POST", "/predict", form, {"Content-Type": ctype})
            assert got[0] == status, (what, got)
            assert words in refusal(*got), what
    form, ctype = multipart("x.txt", b"", field="note")
    no_file = server.request("POST", "/predict", form.replace(b'; filename="x.txt"', b""), {"Content-Type": ctype})
    assert no_file[0] == 400 and "file field" in refusal(*no_file)
    assert server.request("GET", "/predict")[0] == 405
    assert server.request("PUT", "/predict", good_bytes)[0] == 405
    assert refusal(*server.request("GET", "/nowhere")) == "Not Found"
    # still serving, and one log line per refusal
    assert server.predict_file(good)[0] == 200
    log = server.log.read_text()
    assert log.count("refused POST /predict") - refused_before == 2 * len(cases) + 1
    assert "Traceback" not in log


def test_decode_refuses_a_bomb_from_its_header():
    """The pixel limit is read from the header: a file whose data would not even decode is refused for its size."""
    from lightcycle.serve import Refusal, Upload, decode_upload

    for side, words in ((5_000, "5000x5000 = 25000000 pixels, more than the limit of 10000"), (100_000, "decompression bomb")):
        with pytest.raises(Refusal) as caught:
            decode_upload(Upload("bomb.png", bomb_png(side)[:60]), max_pixels=10_000)
        assert caught.value.status == 413 and words in caught.value.message


@pytest.mark.slow
def test_cli_error_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lightcycle.cli.serve", f"ckpt={tmp_path / 'missing.ckpt'}"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "checkpoint not found" in result.stderr, result.stderr


def test_runtime_choice():
    """auto: ONNX Runtime on the CPU unless TTA or an ensemble needs torch; torch on a GPU; onnx that
    cannot be honoured is one clear line."""
    from lightcycle.errors import LightcycleError
    from lightcycle.serve.runtime import resolve_runtime

    assert resolve_runtime("auto", "cpu") == "onnx"
    assert resolve_runtime("auto", "cuda") == "torch"
    assert resolve_runtime("auto", "cpu", tta=2) == resolve_runtime("auto", "cpu", ensemble=True) == "torch"
    assert resolve_runtime("torch", "cpu") == "torch" and resolve_runtime("onnx", "cpu") == "onnx"
    for kwargs, words in (({"tta": 2}, "cannot serve tta.n=2"), ({"ensemble": True}, "cannot serve ensemble=true")):
        with pytest.raises(LightcycleError, match=words):
            resolve_runtime("onnx", "cpu", **kwargs)
    with pytest.raises(LightcycleError, match="runs on the CPU"):
        resolve_runtime("onnx", "cuda")
    with pytest.raises(LightcycleError, match="runtime must be one of"):
        resolve_runtime("tensorrt", "cpu")


def test_predictor_engine_refuses_tta(demo_checkpoints):
    """An exported model's engine replaces one model's plain forward pass; TTA views need torch."""
    from lightcycle.errors import LightcycleError
    from lightcycle.predict import Predictor

    ckpt, _ = demo_checkpoints["classification"]
    with pytest.raises(LightcycleError, match="one model without TTA"):
        Predictor.from_checkpoint(ckpt, tta=2, engine=lambda x: x)


@pytest.mark.slow
def test_onnx_with_tta_is_one_line(demo_checkpoints):
    ckpt, _ = demo_checkpoints["classification"]
    result = subprocess.run([sys.executable, "-m", "lightcycle.cli.serve", f"ckpt={ckpt}", "runtime=onnx", "tta.n=2"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "runtime=onnx cannot serve tta.n=2" in lines[0], result.stderr


@pytest.mark.slow
def test_sigterm_answers_requests_in_flight(demo_checkpoints, tmp_path):
    """SIGTERM while requests are queued: every request already sent is answered, then the server exits."""
    ckpt, _ = demo_checkpoints["classification"]
    server = Served(ckpt, tmp_path / "server.log", "max_batch_size=2").wait_ready()
    big = (np.random.default_rng(0).random((1000, 1000, 3)) * 255).astype(np.uint8)
    body, ctype = multipart("big.png", image_bytes(big, "PNG", compress_level=1))
    connections = []
    try:
        for _ in range(12):
            conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
            conn.request("POST", "/predict", body=body, headers={"Content-Type": ctype})
            connections.append(conn)
        # every connection accepted by the server before the signal (one still in the kernel's backlog when
        # the listening socket closes is reset, not in flight)
        time.sleep(2.0)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        finished = []
        for conn in connections:
            response = conn.getresponse()
            assert response.status == 200, response.read()
            assert json.loads(response.read())["label"]
            finished.append(time.monotonic())
        assert max(finished) > signalled  # some were still in flight when the signal came
        server.proc.wait(60)
    finally:
        for conn in connections:
            conn.close()
        server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log, log[-2000:]
