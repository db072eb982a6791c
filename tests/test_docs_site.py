"""The documentation site builds with `mkdocs build --strict` (every link, anchor, nav entry and API
reference resolves), and every relative link of README.md points at a file of the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def readme_links(text: str) -> list[str]:
    """The relative targets of the Markdown links and images of a text (web addresses and anchors left out)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_every_relative_link_of_the_readme_points_at_a_file():
    links = readme_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert any(link.startswith("docs/") for link in links), links  # the README sends readers to the pages
    missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_link_check_finds_a_missing_file():
    text = "see [a](docs/tasks.md), [b](docs/no-such-page.md#x), [c](https://example.org), [d](#anchor)"
    assert readme_links(text) == ["docs/tasks.md", "docs/no-such-page.md#x"]
    assert not (ROOT / "docs" / "no-such-page.md").exists()


def nav_pages(nav: list) -> set[str]:
    """The page files of mkdocs.yml's `nav` (sections nest lists of `title: file` entries)."""
    found: set[str] = set()
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            found |= nav_pages(value) if isinstance(value, list) else {value}
    return found


def test_every_page_is_in_the_navigation_and_every_entry_is_a_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages and nav_pages(config["nav"]) == pages


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    reference = (site / "reference.html").read_text(encoding="utf-8")
    for name in ("VisionModule", "FolderDataModule", "Predictor", "LRFinder", "OneCycle"):
        assert name in reference, name  # mkdocstrings rendered the docstrings
    assert "fonts.googleapis.com" not in (site / "index.html").read_text(encoding="utf-8")
