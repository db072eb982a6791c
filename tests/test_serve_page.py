"""lightcycle-serve's page in a real browser (headless Chromium): choose a demo image, read the answer
the page draws, and compare it with the JSON API's answer for the same file, for every task."""

from __future__ import annotations

import pytest

from tests.browser import chromium_driver, quit_driver

IMAGES = {"classification": "valid/*/*.jpg", "multilabel": "train/*.jpg", "segmentation": "images/*.jpg", "points": "images/*.jpg"}


@pytest.fixture(scope="module")
def browser():
    session = chromium_driver()
    yield session
    quit_driver(session)


def upload(browser, url: str, path) -> dict:
    """Open the page, choose `path`, wait for the drawn answer; returns what the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-task"))
    browser.find_element(By.ID, "file").send_keys(str(path))
    WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "answer").get_attribute("data-done"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#details .row")
    done = browser.find_element(By.ID, "answer").get_attribute("data-done")
    page = {
        "done": done,
        "answer": browser.find_element(By.ID, "answer").text,
        "status": browser.find_element(By.ID, "status").text,
        "rows": [(r.get_attribute("data-name"), "on" in r.get_attribute("class").split(), r.text) for r in rows],
        "thresholds": len(browser.find_elements(By.CSS_SELECTOR, "#details .thresh")),
        "canvas": browser.execute_script(
            "const c = document.getElementById('picture'); return [c.width, c.height, c.style.display];"),
    }
    if done == "true":
        # how many pixels of the canvas differ from the picture drawn alone (what the page drew on top)
        page["drawn_over"] = browser.execute_script("""
            const c = document.getElementById('picture');
            const img = new Image();
            img.src = URL.createObjectURL(document.getElementById('file').files[0]);
            return img.decode().then(() => {
              const plain = document.createElement('canvas');
              plain.width = c.width; plain.height = c.height;
              plain.getContext('2d').drawImage(img, 0, 0);
              const a = plain.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              const b = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 0; i < a.length; i += 4) if (Math.abs(a[i] - b[i]) + Math.abs(a[i+1] - b[i+1]) + Math.abs(a[i+2] - b[i+2]) > 6) n++;
              return n;
            });""")
    return page


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "multilabel", "segmentation", "points"])
def test_page_draws_the_answer(task, browser, demo_checkpoints, served):
    from PIL import Image

    _, data_root = demo_checkpoints[task]
    image = sorted(data_root.glob(IMAGES[task]))[1]
    server = served.get(task)
    status, expected = server.predict_file(image)
    assert status == 200
    page = upload(browser, server.url, image)
    assert page["done"] == "true", page["status"]
    assert page["status"] == image.name
    assert page["canvas"] == [*Image.open(image).size, "block"]  # the picture at its own size
    names = [name for name, _, _ in page["rows"]]
    if task == "classification":
        assert page["answer"] == expected["label"]
        assert sorted(names) == sorted(expected["probabilities"])
        assert names[0] == expected["label"] and [n for n, on, _ in page["rows"] if on] == [expected["label"]]
        assert page["drawn_over"] == 0
    if task == "multilabel":
        assert page["answer"] == (" ".join(expected["tags"]) or "(no tag over its threshold)")
        assert sorted(n for n, on, _ in page["rows"] if on) == sorted(expected["tags"])
        assert page["thresholds"] == len(expected["thresholds"])
    if task == "segmentation":
        top = max(expected["shares"], key=expected["shares"].get)
        assert page["answer"] == f"mostly {top}"
        assert sorted(names) == sorted(expected["codes"])
        assert page["drawn_over"] > 0  # the mask overlaid on the picture
    if task == "points":
        assert page["answer"] == f"{len(expected['points'])} point(s)"
        shown = [text.split(": ")[1] for _, _, text in page["rows"]]
        assert shown == [f"({x:.1f}, {y:.1f})" for x, y in expected["points"]]
        assert page["drawn_over"] > 0  # the points marked on the picture


@pytest.mark.slow
def test_page_shows_a_refusal(browser, served, tmp_path):
    server = served.get("classification")
    note = tmp_path / "note.jpg"
    note.write_text("not a picture")
    page = upload(browser, server.url, note)
    assert page["done"] == "error"
    assert "cannot read image" in page["status"]


@pytest.mark.slow
def test_ci_fails_without_the_browser(monkeypatch):
    """In CI a missing Chromium is a failure (.ci/run installs it); elsewhere the page tests skip."""
    import tests.browser as browser_module

    monkeypatch.setattr(browser_module.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI: chromium is not installed"):
        browser_module.chromium_driver()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        browser_module.chromium_driver()
