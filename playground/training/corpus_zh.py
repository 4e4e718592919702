"""Chinese training text from Debian's `fortunes-zh`: Tang and Song poems, sayings, classics, cleaned of attribution lines.

The package installs fortune files (`%` lines separate the entries) in /usr/share/games/fortunes:
`tang300` (300 Tang poems), `song100` (100 Song poems) and `chinese` (sayings, the classics, and
some Debian manual excerpts). Titles are kept, authors and `-- source` lines are not, and entries
that are mostly not Chinese (manual pages, tables) are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ModelLoadError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNE_FILES = ("tang300", "song100", "chinese")
INSTALL_HINT = "sudo apt-get install fortunes-zh"
MIN_HAN_FRACTION = 0.6  # of an entry's non-space characters; below that it is a manual excerpt or a table

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # the files colour titles and authors for the terminal
ATTRIBUTION = re.compile(r"^\s*(--|——)")  # "    -- 罗隐《西施》", "    --《论语》为政"
AUTHOR = re.compile(r"^\s*作者\s*[:：]")  # "作者：张九龄", "作者:柳开（９４６－９９９）"
TITLE_PREFIX = re.compile(r"^\s*题目\s*[:：]\s*")  # "题目:《塞上》" -> "《塞上》"


def is_han(char: str) -> bool:
    """A CJK unified ideograph (the basic block and extension A), the characters Chinese text is made of."""
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf"


def decode_fortune_bytes(data: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else GB18030 (a superset of GBK and GB2312, older packages' encoding).

    Guessing wrong is the classic cause of 乱码 in trained models, so undecodable bytes are an error, not a `�`.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("gb18030")


def clean_entry(entry: str) -> str | None:
    """One fortune as training text: no colour codes, authors or attribution lines; None if it is not mostly Chinese."""
    lines = []
    for line in ANSI_ESCAPE.sub("", entry).replace("\xa0", " ").splitlines():
        if ATTRIBUTION.match(line) or AUTHOR.match(line):
            continue
        line = re.sub(r"\s+", " ", TITLE_PREFIX.sub("", line)).strip()
        if line:
            lines.append(line)
    text = "\n".join(lines)
    visible = re.sub(r"\s", "", text)
    if len(visible) < 4 or sum(map(is_han, visible)) < MIN_HAN_FRACTION * len(visible):
        return None
    return text


def read_fortune_file(path: Path) -> list[str]:
    """The cleaned entries of one fortune file, in file order."""
    entries = re.split(r"^%\s*$", decode_fortune_bytes(path.read_bytes()), flags=re.MULTILINE)
    return [text for text in map(clean_entry, entries) if text]


def load_zh_texts(max_chars: int | None = None, fortunes_dir: Path = FORTUNES_DIR) -> list[str]:
    """Every distinct cleaned entry of the fortunes-zh files (Tang poems first); `max_chars` keeps a prefix for tests."""
    paths = []
    for name in FORTUNE_FILES:
        # Debian ships NAME as UTF-8 with a NAME.u8 link; older packages had GB2312 in NAME and UTF-8 in NAME.u8.
        utf8 = fortunes_dir / f"{name}.u8"
        path = utf8 if utf8.is_file() else fortunes_dir / name
        if not path.is_file():
            raise ModelLoadError(key="models.no_fortunes", path=str(path), command=INSTALL_HINT)
        paths.append(path)
    texts, seen, total = [], set(), 0
    for path in paths:
        for text in read_fortune_file(path):
            if text in seen:
                continue
            seen.add(text)
            texts.append(text)
            total += len(text)
            if max_chars and total >= max_chars:
                return texts
    return texts


def split_texts(texts: list[str], every: int = 10) -> tuple[list[str], list[str]]:
    """Hold out every `every`-th text for validation (deterministic, spread over poems and sayings alike)."""
    train = [t for i, t in enumerate(texts) if i % every != every - 1]
    val = [t for i, t in enumerate(texts) if i % every == every - 1]
    return train, val


def chunk_text(text: str, max_chars: int) -> list[str]:
    """Split a text longer than `max_chars` at line ends (else sentence ends, else anywhere) into pieces that fit.

    Each piece becomes its own `[CLS] … [SEP]` training text, so no part of a long text falls
    outside every training window.
    """
    if len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    for line in text.split("\n"):
        while len(line) > max_chars:  # a line longer than a window: cut after the last sentence end that fits
            cut = max((line.rfind(mark, 0, max_chars) for mark in "。！？；"), default=-1) + 1 or max_chars
            pieces.append(line[:cut])
            line = line[cut:]
        if pieces and len(pieces[-1]) + 1 + len(line) <= max_chars:
            pieces[-1] += "\n" + line
        elif line:
            pieces.append(line)
    return pieces
