"""The command lines of a documentation page (README.md or a page under docs/), so tests run and compose
exactly what the documentation says."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
ENTRY_POINTS = ("lightcycle-train", "lightcycle.cli.train")


def page(name: str) -> Path:
    """A documentation page by its file name under docs/ (`scale-out.md`), or README.md."""
    path = README if name == "README.md" else DOCS / name
    assert path.is_file(), f"no documentation page {path}"
    return path


def section(name: str, title_start: str | None = None) -> str:
    """The text of page `name`, or of its `## <title_start>...` section up to the next `## ` heading."""
    text = page(name).read_text(encoding="utf-8")
    if title_start is None:
        return text
    match = re.search(rf"^## {re.escape(title_start)}.*?$(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    assert match, f"{name} has no section starting '## {title_start}'"
    return match.group(1)


def commands(name: str, title_start: str | None = None) -> list[str]:
    """Every command line of the page's (or section's) ```bash blocks (continuations joined; comments and
    #SBATCH lines left out)."""
    lines: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", section(name, title_start), re.DOTALL | re.MULTILINE):
        block = re.sub(r"\\\n\s*", "", block)  # a trailing backslash continues the line
        lines += [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return lines


def user_pages() -> list[Path]:
    """README.md and every user page under docs/ (the benchmark pages quote what was measured, not what to type)."""
    return [README, *(p for p in sorted(DOCS.glob("*.md")) if not p.name.startswith("benchmarks"))]


def train_overrides(line: str) -> tuple[list[str], bool]:
    """The Hydra overrides a command line passes to lightcycle-train, and whether it is a multirun (`-m`)."""
    words = shlex.split(line, comments=True)  # a trailing `# ...` explains the line
    start = next(i for i, w in enumerate(words) if w.endswith(ENTRY_POINTS)) + 1
    args = words[start:]
    multirun = "-m" in args or "--multirun" in args
    return [a for a in args if a not in ("-m", "--multirun")], multirun


def find(fragments: tuple[str, ...], lines: list[str]) -> str:
    """The one line that holds every fragment (written once, or the same line several times)."""
    found = {line for line in lines if all(f in line for f in fragments)}
    assert len(found) == 1, f"expected one documented line with {fragments}, found {sorted(found)}"
    return found.pop()
