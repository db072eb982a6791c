"""One exception type for problems the user can fix (bad paths, files, names, settings).

The command-line entry points print these as a single line and exit non-zero instead of showing a
traceback, because the traceback would point into our code while the fault is in the user's input.
"""

from __future__ import annotations

import re

# What torch's DataLoader puts before an exception re-raised from a worker process: the worker's
# traceback, then "<module>.<Class>: <original message>".
_WORKER_TRACEBACK = re.compile(
    r"\ACaught \w+ in DataLoader worker process \d+\.\nOriginal Traceback \(most recent call last\):\n"
    r".*?^(?:[\w.]+\.)?LightcycleError: (?P<message>.*)\Z",
    re.DOTALL | re.MULTILINE,
)


def printable(text: object) -> str:
    """`text` with undecodable file-name bytes shown as `\\xe9` escapes, so it can always be printed.

    On Linux a file name that is not UTF-8 arrives as a str holding lone surrogates
    (surrogateescape); writing that to a UTF-8 stream or log file raises UnicodeEncodeError.
    """
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that did not come from file-name bytes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


# C0 and C1 control characters (ESC starts terminal escape sequences, a newline would start a fake
# line) and the bidirectional overrides that reorder what a terminal shows.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def for_console(text: object) -> str:
    """`printable(text)` with control characters escaped (`\\x1b`, `\\n`): a class name, file name
    or label from someone's data can neither move the cursor, recolour the terminal nor fake a line."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char) or (
            f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")

    return _CONTROLS.sub(escape, printable(text))


def brief_cause(exc: BaseException, max_chars: int) -> str:
    """`TypeName`, or `TypeName: first line` when that line is at most `max_chars` long.

    torch's load errors span pages of migration advice; a user-facing message keeps one line.
    """
    lines = str(exc).strip().splitlines()
    detail = f": {lines[0]}" if lines and len(lines[0]) <= max_chars else ""
    return f"{type(exc).__name__}{detail}"


class LightcycleError(Exception):
    """A user-facing error: the message names the file or setting and what is wrong with it.

    The message is made printable (see `printable`), and when torch re-raises the error from a
    DataLoader worker, the worker's traceback it prepends is dropped again: the user sees only
    the original message.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        text = printable(message)
        match = _WORKER_TRACEBACK.match(text)
        if match:
            text = match.group("message").rstrip("\n")
        super().__init__(text, *args)


class SettingError(LightcycleError, ValueError):
    """A setting whose value is out of range: shown as one line like every LightcycleError, and
    still a ValueError for Python code that calls a schedule or scorer directly."""
