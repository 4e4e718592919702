"""The text an evaluation scores: pasted, a .txt/.jsonl/.csv file (read with the fine-tune tab's checks and limits),
or a built-in held-out set (the demo corpora's validation splits, which the demo models never trained on)."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..finetune.data import decode_bytes, from_text, read_file

BUILTIN_PREFIX = "builtin:"
BUILTIN_SETS = ("en", "zh")  # builtin:en, builtin:zh
TEXT_SEPARATOR = "\n\n"  # between the records of a .jsonl or .csv file (the guide joins wikitext's rows so)


@dataclass(frozen=True)
class EvaluationText:
    """One text to score, with the name and hash an evaluation is saved under."""

    text: str
    name: str  # "pasted text", the file's name (never its path), or "builtin:en"
    sha256: str  # of the text's UTF-8 bytes: the same text gives the same hash whatever file it came from

    @property
    def bytes(self) -> int:
        """The UTF-8 bytes of the text, the denominator of bits per byte."""
        return len(self.text.encode("utf-8"))


def _evaluation_text(text: str, name: str) -> EvaluationText:
    return EvaluationText(text, name, hashlib.sha256(text.encode("utf-8")).hexdigest())


PASTED = "pasted text"  # the name a pasted text is saved under (the tab shows it in the page's language)


def from_pasted(text: str, name: str = PASTED) -> EvaluationText:
    """Pasted text, scored as it is; refused as the fine-tune tab refuses it (not text, over 20 MB, empty)."""
    if isinstance(text, str) and not text.strip():
        raise DataError(key="evaluate.empty", field="data", name=name)
    from_text(text, name)  # the checks; its split into examples is for training, not for scoring
    return _evaluation_text(text.encode("utf-8", "replace").decode("utf-8"), name)  # a lone surrogate becomes "?"


def from_file(path: Path | str, column: str | None = None) -> EvaluationText:
    """A .txt file as it reads (decoded in its own encoding), or the texts of a .jsonl file's field / a .csv file's
    column joined by blank lines; every check of the fine-tune data (format, 20 MB, empty, binary, encoding)."""
    path = Path(path)
    try:
        texts = read_file(path, column)  # refuses what the fine-tune tab refuses
    except DataError as exc:
        if exc.key == "data.empty":  # said for training text: "no text to train on"
            raise DataError(key="evaluate.empty", field="data", name=path.name) from None
        raise
    if path.suffix.lower() == ".txt":
        text, _ = decode_bytes(path.read_bytes(), path.name)
        return _evaluation_text(text, path.name)
    return _evaluation_text(TEXT_SEPARATOR.join(texts.texts), path.name)


def from_upload(name: str, raw: bytes, column: str | None = None) -> EvaluationText:
    """An uploaded file's bytes (the fine-tune tab's `UploadedData`), read through `from_file` from a private copy."""
    with tempfile.TemporaryDirectory(prefix="gpt2-playground-eval-") as folder:
        path = Path(folder) / Path(name).name
        path.write_bytes(raw)
        return from_file(path, column)


def builtin_text(name: str) -> EvaluationText:
    """A held-out set: `en`, the English demo corpus's validation chunks (Python's docs, `split_corpus`), or `zh`, the
    Chinese one's validation texts (fortunes-zh, `split_texts`), made by the very functions the demo builds split with,
    so no demo model (nor a test's model trained on a prefix of the corpus) has seen a word of them."""
    from ..training.corpus_zh import load_zh_texts, split_texts
    from ..training.demo import load_corpus, split_corpus

    name = name.removeprefix(BUILTIN_PREFIX)
    if name == "en":
        return _evaluation_text(split_corpus(load_corpus())[1], BUILTIN_PREFIX + name)
    if name == "zh":
        return _evaluation_text(TEXT_SEPARATOR.join(split_texts(load_zh_texts())[1]), BUILTIN_PREFIX + name)
    raise DataError(key="evaluate.unknown_builtin", field="data", name=name,
                    available=", ".join(BUILTIN_PREFIX + n for n in BUILTIN_SETS))


def read_data(spec: str, column: str | None = None) -> EvaluationText:
    """What `--data` names: `builtin:en`, `builtin:zh`, or a file."""
    if spec.startswith(BUILTIN_PREFIX):
        return builtin_text(spec)
    return from_file(spec, column)
