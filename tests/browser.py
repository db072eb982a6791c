"""Headless Chromium for the page tests: Debian's `chromium` and `chromium-driver` through selenium.

Where `CI` is set the browser must be there (`.ci/run` installs it) and its absence fails the test;
elsewhere a machine without it skips the page tests, saying why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)
# No network beyond loopback: without these Chromium waits on its background services.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900")


def find(names: tuple[str, ...]) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


def chromium_driver():
    """A selenium WebDriver on headless Chromium with a fresh, empty profile (the caller quits it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = find(CHROMIUM_NAMES), find(DRIVER_NAMES)
    if not browser or not driver:
        missing = "chromium" if not browser else "chromedriver"
        if os.environ.get("CI"):
            pytest.fail(f"CI: {missing} is not installed (.ci/run installs Debian's chromium and chromium-driver)")
        pytest.skip(f"{missing} is not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    profile = Path(tempfile.mkdtemp(prefix="lightcycle-chromium-"))
    options.add_argument(f"--user-data-dir={profile}")
    session = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    session.set_page_load_timeout(60)
    session.lightcycle_profile = profile  # removed by quit_driver
    return session


def quit_driver(session) -> None:
    try:
        session.quit()
    finally:
        shutil.rmtree(getattr(session, "lightcycle_profile", ""), ignore_errors=True)
