"""The command lines of a README section, so tests run and compose exactly what the README says."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
ENTRY_POINTS = ("lightcycle-train", "lightcycle.cli.train")


def section(title_start: str) -> str:
    """The text of the `## <title_start>...` section, up to the next `## ` heading."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title_start)}.*?$(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
    assert match, f"README has no section starting '## {title_start}'"
    return match.group(1)


def commands(title_start: str) -> list[str]:
    """Every command line of the section's ```bash blocks (continuations joined; comments and #SBATCH lines left out)."""
    lines: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", section(title_start), re.DOTALL | re.MULTILINE):
        block = re.sub(r"\\\n\s*", "", block)  # a trailing backslash continues the line
        lines += [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return lines


def train_overrides(line: str) -> tuple[list[str], bool]:
    """The Hydra overrides a command line passes to lightcycle-train, and whether it is a multirun (`-m`)."""
    words = shlex.split(line)
    start = next(i for i, w in enumerate(words) if w.endswith(ENTRY_POINTS)) + 1
    args = words[start:]
    multirun = "-m" in args or "--multirun" in args
    return [a for a in args if a not in ("-m", "--multirun")], multirun


def find(fragments: tuple[str, ...], lines: list[str]) -> str:
    """The one line that holds every fragment (written once, or the same line several times)."""
    found = {line for line in lines if all(f in line for f in fragments)}
    assert len(found) == 1, f"expected one README line with {fragments}, found {sorted(found)}"
    return found.pop()
