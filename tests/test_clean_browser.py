"""lightcycle-clean end to end in a real browser (headless Chromium): the command scores a trained run,
the page relabels one image and removes another, Apply moves the files, and `lightcycle-clean undo=`
puts every byte back."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import chromium_driver, quit_driver

REMOVED = ".lightcycle-removed"


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_like_training(demo_checkpoints, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the demo classification run: <run>/checkpoints/last.ckpt, <run>/.hydra/config.yaml, its data."""
    ckpt, data = demo_checkpoints["classification"]
    root = tmp_path / "data"
    shutil.copytree(data, root)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy2(ckpt, run / "checkpoints" / "last.ckpt")
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(
        "data:\n  _target_: lightcycle.data.FolderDataModule\n"
        f"  root: {json.dumps(str(root))}\n  size: 32\n  batch_size: 6\n  num_workers: 0\n  backbone: test_resnet\n")
    return run / "checkpoints" / "last.ckpt", root


def clean_cli(*args: str, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    command = [sys.executable, "-m", "lightcycle.cli.clean", *args]
    if kwargs.pop("background", False):
        return subprocess.Popen(command, env=env, **kwargs)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def wait_for(url: str, server: subprocess.Popen, log: Path, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"lightcycle-clean exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/info", timeout=5) as answer:
                return json.loads(answer.read())
        except OSError:
            time.sleep(1)
    pytest.fail(f"lightcycle-clean did not answer in {timeout} s: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_relabel_remove_apply_then_undo_in_a_browser(demo_checkpoints, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ckpt, root = run_like_training(demo_checkpoints, tmp_path)
    before = tree(root)
    port = free_port()
    log = tmp_path / "clean.log"
    with open(log, "w") as out:
        server = clean_cli(f"ckpt={ckpt}", f"port={port}", "pairs=20", background=True, stdout=out,
                           stderr=subprocess.STDOUT)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}"
        info = wait_for(url, server, log)
        assert info["task"] == "classification" and info["counts"] == {"train": 18, "valid": 6}
        assert (ckpt.parent.parent / "cleaning" / "scores.json").is_file()
        browser = chromium_driver()
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        cards = browser.find_elements(By.CSS_SELECTOR, "#grid .card")
        assert len(cards) == 24
        losses = [float(c.find_element(By.CSS_SELECTOR, ".meta div").text.split("loss ")[1]) for c in cards]
        assert losses == sorted(losses, reverse=True)  # worst first
        assert browser.execute_script(
            "return [...document.querySelectorAll('#grid img')].every((i) => i.complete && i.naturalWidth > 0)")

        train = [c for c in cards if c.get_attribute("data-split") == "train"]
        relabelled, removed = train[0].get_attribute("data-path"), train[1].get_attribute("data-path")
        old_class = relabelled.split("/")[1]
        new_class = next(c for c in info["classes"] if c != old_class)
        Select(train[0].find_element(By.CSS_SELECTOR, "select.relabel")).select_by_value(new_class)
        train[1].find_element(By.CSS_SELECTOR, "button.remove").click()
        assert "2 change(s)" in browser.find_element(By.ID, "pending").text
        assert tree(root) == before  # nothing changes on disk until Apply

        browser.find_element(By.ID, "tab-pairs").click()
        wait.until(lambda b: b.find_element(By.ID, "pairs").get_attribute("data-loaded") == "true")
        assert browser.find_elements(By.CSS_SELECTOR, "#pairs .pair")
        browser.find_element(By.ID, "tab-images").click()
        wait.until(lambda b: b.find_element(By.ID, "grid").get_attribute("data-loaded") == "true")

        browser.find_element(By.ID, "apply").click()
        wait.until(lambda b: b.find_element(By.ID, "result").get_attribute("data-done"))
        result = browser.find_element(By.ID, "result")
        assert result.get_attribute("data-done") == "true", result.text
        done = {li.get_attribute("data-path") for li in result.find_elements(By.CSS_SELECTOR, "ul.done li")}
        assert done == {relabelled, removed}
        journal = Path(result.find_element(By.CSS_SELECTOR, "code.journal").text)
        assert journal.parent == ckpt.parent.parent / "cleaning"

        name = Path(relabelled).name
        assert (root / "train" / new_class / name).is_file() and not (root / relabelled).exists()
        assert (root / REMOVED / journal.stem / removed).is_file() and not (root / removed).exists()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#grid .card.done")) == 2)
    finally:
        if browser is not None:
            quit_driver(browser)
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    undone = clean_cli(f"undo={journal}")
    assert undone.returncode == 0, undone.stderr
    assert tree(root) == before  # byte for byte
