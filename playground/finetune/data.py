"""Fine-tuning data: pasted text or a .txt/.jsonl/.csv file, decoded, checked, previewed, split and packed into blocks.

Reading (`from_text`, `read_file`) gives a `TrainingText`: the texts, the encoding they were read in and a
hash. `prepare_data` turns it into token blocks for the engine with a model's tokenizer: each text is
wrapped as the model expects one text to start and end (byte-level BPE: `text <|endoftext|>`; the
BertTokenizer Chinese models: `[CLS] text [SEP]`), all texts are concatenated and cut into blocks,
and a seeded share of the blocks is held out for validation.

Every problem that garbles a fine-tune without failing it is either refused with a `DataError` or
reported (see FACTS.md, "What users of Chinese GPT-2 trip over"): a GBK file read as UTF-8 (the
encoding is detected and named), texts shorter than a block (packed together, never dropped, and
counted), a flood of `[UNK]` (its share is reported).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, Notice

MAX_DATA_BYTES = 20 * 1024 * 1024  # uploads and pasted text above this are refused before reading
FORMATS = (".txt", ".jsonl", ".csv")
DEFAULT_JSONL_FIELD = "text"
# Legacy encodings tried when a file is not UTF-8, in a closed list: charset-normalizer picks the one whose
# decoding reads most like language. Chinese files come as GB18030 (a superset of GBK and GB2312) or Big5;
# every Big5 byte string is also valid GB18030, so a try-in-order list could not tell them apart.
LEGACY_ENCODINGS = ("gb18030", "big5", "cp1252")
MAX_CHAOS = 0.3  # charset-normalizer's "mess" ratio above which a decoding is not trusted
DAMAGED_UTF8_FRACTION = 0.01  # UTF-8 text with fewer bad bytes than this is damaged UTF-8, not another encoding
UNK_NOTICE_FRACTION = 0.01
PREVIEW_EXAMPLES = 5
PREVIEW_CHARS = 200
VAL_FRACTION = 0.1
MIN_VAL_BLOCKS = 4  # held out however small the fraction, when the text has 4 times as many blocks (one block says little)


@dataclass(frozen=True)
class TrainingText:
    """Texts to train on, one example each, with where they came from."""

    texts: tuple[str, ...]
    source: str  # "pasted text" or the file's name (never its full path)
    encoding: str  # the encoding the file was read in: utf-8, utf-8-sig, utf-16, gb18030, big5, cp1252
    sha256: str  # of the texts themselves: the same text gives the same hash whatever the file's encoding

    @property
    def chars(self) -> int:
        return sum(len(t) for t in self.texts)


@dataclass
class PreparedData:
    """Token blocks for the engine, and what a user should see about them before training."""

    train_blocks: object  # LongTensor (N, block_size + 1): inputs [:, :-1], targets [:, 1:]
    val_blocks: object  # LongTensor (M, block_size + 1), held out
    block_size: int
    preview: list[dict]  # the first examples: text (first 200 characters), chars, tokens
    stats: dict  # texts, tokens, short_texts, train_blocks, val_blocks, test_blocks, unk_fraction, source, encoding, sha256
    notices: list[Notice] = field(default_factory=list)
    test_blocks: object = None  # list of (block_size + 1,) tensors held out for the end, or None (no test split)


# --- decoding -----------------------------------------------------------------------------------

_BOMS = (  # UTF-32 before UTF-16: the UTF-32 LE mark begins with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_bytes(raw: bytes, name: str = "the data") -> tuple[str, str]:
    """(text, encoding) of a file's bytes: a byte-order mark, else UTF-8, else GB18030, Big5 or Windows-1252.

    Refuses binary data (NUL bytes without a UTF-16/32 byte-order mark), UTF-8 with a few damaged
    bytes (decoding it as anything else would garble all of it), and bytes no listed encoding reads.
    """
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(encoding), encoding
            except UnicodeDecodeError as exc:
                # utf-8-sig counts from after its mark, the UTF-16/32 decoders from the file's first byte
                offset = exc.start + (len(bom) if encoding == "utf-8-sig" else 0)
                raise DataError(key="data.bad_bom", name=name, encoding=encoding.upper().removesuffix("-SIG"),
                                offset=offset) from None
    if b"\x00" in raw:
        raise DataError(key="data.binary", name=name)
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    loose = raw.decode("utf-8", errors="surrogateescape")  # each invalid byte becomes one lone surrogate
    bad = sum(1 for char in loose if 0xDC80 <= ord(char) <= 0xDCFF)
    has_utf8_multibyte = any(ord(char) > 0x7F and not 0xDC80 <= ord(char) <= 0xDCFF for char in loose)
    if has_utf8_multibyte and bad / len(raw) < DAMAGED_UTF8_FRACTION:
        raise DataError(key="data.damaged_utf8", name=name, bad=bad, offset=first_bad)
    from charset_normalizer import from_bytes

    best = from_bytes(raw, cp_isolation=list(LEGACY_ENCODINGS)).best()
    if best is None or best.chaos > MAX_CHAOS:
        raise DataError(key="data.unknown_encoding", name=name)
    return str(best), best.encoding


# --- reading ------------------------------------------------------------------------------------


def split_texts(text: str) -> list[str]:
    """Examples in plain text: paragraphs separated by blank lines, or, when there are no blank lines, one per line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = re.split(r"\n[ \t\u3000]*\n", text) if re.search(r"\n[ \t\u3000]*\n", text) else text.split("\n")
    return [part.strip() for part in parts if part.strip()]


def _training_text(texts: list[str], source: str, encoding: str) -> TrainingText:
    if not texts:
        raise DataError(key="data.empty", name=source)
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    return TrainingText(tuple(texts), source, encoding, digest.hexdigest())


def from_text(text: str, source: str = "pasted text") -> TrainingText:
    """Pasted text: split as a .txt file would be (paragraphs, or lines when there are no blank lines)."""
    if not isinstance(text, str):
        raise DataError(key="data.not_text", type=type(text).__name__)
    size = len(text.encode("utf-8", "replace"))
    if size > MAX_DATA_BYTES:
        raise DataError(key="data.text_too_large", size_mb=round(size / 2**20, 1), limit_mb=MAX_DATA_BYTES // 2**20)
    text = text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate from a browser becomes "?"
    return _training_text(split_texts(text), source, "utf-8")


def _read_checked(path: Path) -> bytes:
    if path.suffix.lower() not in FORMATS:
        raise DataError(key="data.format", name=path.name, formats=", ".join(FORMATS))
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(key="data.unreadable", name=path.name, error=exc.strerror or str(exc)) from None
    if size > MAX_DATA_BYTES:
        raise DataError(key="data.too_large", name=path.name, size_mb=round(size / 2**20, 1), limit_mb=MAX_DATA_BYTES // 2**20)
    if size == 0:
        raise DataError(key="data.empty", name=path.name)
    return path.read_bytes()


def _csv_rows(text: str, name: str) -> tuple[list[str], list[list[str]]]:
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise DataError(key="data.bad_csv", name=name, error=str(exc)) from None
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError(key="data.no_header", name=name)
    return [cell.strip() for cell in rows[0]], rows[1:]


def csv_columns(path: Path | str) -> list[str]:
    """The column names of a CSV file (its first row), for a column picker."""
    path = Path(path)
    text, _ = decode_bytes(_read_checked(path), path.name)
    return _csv_rows(text, path.name)[0]


def _choose_column(columns: list[str], column: str | None, name: str) -> int:
    if column is None:
        if DEFAULT_JSONL_FIELD in columns:
            return columns.index(DEFAULT_JSONL_FIELD)
        if len(columns) == 1:
            return 0
        raise DataError(key="data.choose_column", name=name, columns=", ".join(columns))
    if column not in columns:
        raise DataError(key="data.no_column", name=name, column=column, columns=", ".join(columns))
    return columns.index(column)


def read_file(path: Path | str, column: str | None = None) -> TrainingText:
    """A .txt (paragraphs, or lines), .jsonl (one JSON object a line; its `text` field, or `column`) or .csv (a column:
    `column`, else one named `text`, else the only one) file of at most 20 MB, in any encoding `decode_bytes` reads."""
    path = Path(path)
    name = path.name
    text, encoding = decode_bytes(_read_checked(path), name)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        texts = split_texts(text)
    elif suffix == ".jsonl":
        key = column or DEFAULT_JSONL_FIELD
        texts = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(key="data.bad_jsonl", name=name, line=number, error=str(exc)) from None
            value = record.get(key) if isinstance(record, dict) else None
            if not isinstance(value, str):
                raise DataError(key="data.no_field", name=name, line=number, text_field=key)
            if value.strip():
                texts.append(value.strip())
    else:
        columns, rows = _csv_rows(text, name)
        index = _choose_column(columns, column, name)
        texts = [row[index].strip() for row in rows if len(row) > index and row[index].strip()]
    return _training_text(texts, name, encoding)


# --- tokens and blocks ----------------------------------------------------------------------------


def _wrapped_ids(training_text: TrainingText, codec) -> list[list[int]]:
    """Each text's ids as the model expects a text to start and end: [CLS] ... [SEP], or ... <|endoftext|>."""
    encoded = codec.tokenizer(list(training_text.texts), add_special_tokens=False, verbose=False)["input_ids"]
    bos = [codec.bos_id] if codec.bos_id is not None else []
    eos = [min(codec.eos_ids)] if codec.eos_ids else []
    return [bos + ids + eos for ids in encoded]


def preview(training_text: TrainingText, codec, examples: int = PREVIEW_EXAMPLES) -> list[dict]:
    """The first examples with their token counts (separators included), for a user to check before training."""
    first = TrainingText(training_text.texts[:examples], training_text.source, training_text.encoding, training_text.sha256)
    return [{"text": text[:PREVIEW_CHARS], "chars": len(text), "tokens": len(ids)}
            for text, ids in zip(first.texts, _wrapped_ids(first, codec))]


def block_preview(blocks, codec, count: int = 2, tokens: int = 48) -> list[list[dict]]:
    """The first `count` blocks as a user would check them, each its first `tokens` tokens: the token's text, whether it
    is a target of the loss (all but a block's first token, which is only read: consecutive blocks share it), and
    whether it is [UNK] or a special token (a separator the texts were wrapped in)."""
    shown = []
    for block in blocks[:count]:
        ids = block[:tokens].tolist()
        shown.append([{"text": codec.label(t, ids[i - 1] if i else None), "target": i > 0, "unk": t == codec.unk_id,
                       "special": t in codec.special_ids and t != codec.unk_id} for i, t in enumerate(ids)])
    return shown


def _test_blocks(test_text: TrainingText, codec, block_size: int) -> list:
    """A test file's blocks: its texts wrapped and packed as the training text's are (a tail as one more block ending at
    the last token); DataError when it holds less than one block."""
    import torch

    stream = [token for ids in _wrapped_ids(test_text, codec) for token in ids]
    if len(stream) < block_size + 1:
        raise DataError(key="data.test_too_short", name=test_text.source, tokens=len(stream), needed=block_size + 1,
                        block=block_size)
    ids = torch.tensor(stream, dtype=torch.long)
    regular = (len(ids) - 1) // block_size
    blocks = [ids[i * block_size: i * block_size + block_size + 1] for i in range(regular)]
    if regular * block_size + 1 < len(ids):
        blocks.append(ids[-(block_size + 1):])
    return blocks


def prepare_data(training_text: TrainingText, codec, block_size: int, val_fraction: float = VAL_FRACTION, seed: int = 0,
                 test_fraction: float = 0.0, test_text: TrainingText | None = None) -> PreparedData:
    """Tokenize, pack into blocks of `block_size + 1` tokens (consecutive blocks share one token, so every token
    but the first is a target exactly once), and hold out a seeded `val_fraction` of the blocks, at least
    MIN_VAL_BLOCKS when the text has four times as many (a quarter of it at most). With `test_fraction`, that
    share of the blocks (at least one) is also held out, for a test the training never looks at: validation picks
    the model kept, so only the test says how it does on text it was not chosen on. The validation blocks are
    the same with or without a test split (the test blocks come from the rest).

    With `test_text` (a test file of the user's) the test blocks are that text's instead, packed the same way, and a notice
    says which share of its texts are also in the training text (a test on text the model trained on says little).

    A tail shorter than a block becomes one more training block that ends at the last token (it overlaps
    the block before it), so no text is dropped. Raises DataError when there is less than one block to
    train on and one to validate on.
    """
    import torch

    wrapped = _wrapped_ids(training_text, codec)
    stream = [token for ids in wrapped for token in ids]
    needed = 2 * block_size + 1
    if len(stream) < needed:
        most = max(1, (len(stream) - 1) // 2)
        raise DataError(
            key="data.too_short", name=training_text.source, tokens=len(stream), needed=needed, block=block_size, most=most)
    ids = torch.tensor(stream, dtype=torch.long)
    regular = (len(ids) - 1) // block_size
    blocks = [ids[i * block_size : i * block_size + block_size + 1] for i in range(regular)]  # each (block_size + 1,)
    has_tail = regular * block_size + 1 < len(ids)
    # Validation blocks are drawn from the regular blocks, never the one the tail block overlaps.
    candidates = regular - 1 if has_tail else regular
    n_val = min(candidates, max(1, round(regular * val_fraction), min(MIN_VAL_BLOCKS, regular // 4)))
    if candidates - n_val < 1 and not has_tail:
        n_val = candidates - 1
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(candidates, generator=generator).tolist()
    val_index = set(order[:n_val])
    n_test = 0
    if test_fraction > 0:  # from the blocks left after validation, leaving at least one to train on
        n_test = min(max(1, round(regular * test_fraction)), candidates - n_val - (0 if has_tail else 1))
        if n_test < 1:
            raise DataError(key="data.too_short_for_test", name=training_text.source, tokens=len(stream), block=block_size)
    test_index = set(order[n_val:n_val + n_test])
    train = [b for i, b in enumerate(blocks) if i not in val_index and i not in test_index]
    if has_tail:
        train.append(ids[-(block_size + 1):])
    val = [blocks[i] for i in sorted(val_index)]
    test = [blocks[i] for i in sorted(test_index)]
    notices: list[Notice] = []
    if test_text is not None:
        test = _test_blocks(test_text, codec, block_size)
        trained = {" ".join(t.split()) for t in training_text.texts}
        overlap = sum(" ".join(t.split()) in trained for t in test_text.texts) / len(test_text.texts)
        if overlap > 0:
            notices.append(Notice(key="data.test_overlap", share=f"{overlap:.0%}", name=test_text.source))

    short = sum(1 for w in wrapped if len(w) < block_size + 1)
    if short:
        notices.append(Notice(key="data.short_texts", short=short, texts=len(wrapped), block=block_size,
                              end="[SEP]" if codec.wordpiece else "<|endoftext|>"))
    unk_fraction = None
    if codec.unk_id is not None:
        content = [t for t in stream if t not in codec.special_ids or t == codec.unk_id]
        unk_fraction = round(content.count(codec.unk_id) / max(1, len(content)), 4)
        if unk_fraction >= UNK_NOTICE_FRACTION:
            notices.append(Notice(key="data.unk", fraction=unk_fraction))
    stats = {
        "source": training_text.source,
        "encoding": training_text.encoding,
        "sha256": training_text.sha256,
        "texts": len(wrapped),
        "chars": training_text.chars,
        "tokens": len(stream),
        "short_texts": short,
        "block_size": block_size,
        "train_blocks": len(train),
        "val_blocks": len(val),
        "train_tokens": len(train) * block_size,
        "val_tokens": len(val) * block_size,
        "test_blocks": len(test),
        "test_tokens": len(test) * block_size,
        "test_source": test_text.source if test_text is not None else None,
        "test_sha256": test_text.sha256 if test_text is not None else None,
        "unk_fraction": unk_fraction,
    }
    return PreparedData(torch.stack(train), torch.stack(val), block_size, preview(training_text, codec), stats, notices,
                        torch.stack(test) if test else None)
