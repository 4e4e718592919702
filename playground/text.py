"""Token bytes -> characters: what each token adds to the text, grouped into whole characters, never a split one.

GPT-2's byte-level BPE cuts most CJK characters and emoji into 2-4 byte tokens that are not UTF-8 on
their own; decoding such a token alone gives U+FFFD. The playground never decodes a token alone for
display: each token's exact bytes are kept, and consecutive tokens are grouped into *units*, the
smallest runs of tokens whose bytes end on a grapheme boundary (one character, or one emoji
sequence). A unit shows its characters; each of its tokens stays reachable with its own bytes.

Two tokenizer families are handled:
- byte-level BPE (GPT-2 and the English demo model): a token's bytes are fixed, the text is their
  concatenation, lossless;
- WordPiece (`BertTokenizer`, the Chinese GPT-2 checkpoints): character-level for Han. `[CLS]`
  starts every sequence and `[SEP]` ends it; a token's text depends on the one before it: `##x`
  continues a word, a space separates two Latin words, and nothing separates CJK characters
  (transformers' `decode` puts a space between every pair, which reads wrongly in Chinese).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import regex

# Characters no space goes before (in WordPiece text), and after which none goes.
_CLOSING = set(".,!?;:%)]}'\"")
_OPENING = set("([{$#")


def escape_bytes(data: bytes) -> str:
    """Bytes as readable text: valid UTF-8 decoded, any other byte as `\\xNN` (never U+FFFD)."""
    return data.decode("utf-8", errors="backslashreplace")


def hex_bytes(data: bytes) -> str:
    """`e6 b3 a8`: how the token view names bytes that are not a whole character."""
    return " ".join(f"{b:02x}" for b in data)


def visible_label(text: str) -> str:
    """A label with its whitespace shown (\\n, \\t, \\r), for axes and dropdowns where a bare newline would vanish."""
    return text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _wide(char: str) -> bool:
    """CJK ideographs, kana, hangul and full-width punctuation: no spaces around them."""
    return unicodedata.east_asian_width(char) in ("W", "F")


@dataclass(frozen=True)
class Unit:
    """Consecutive tokens [start, end) that together make whole characters (usually one)."""

    start: int
    end: int
    text: str  # the characters; bytes that are not valid UTF-8 appear as \xNN
    complete: bool  # False when some bytes are not valid UTF-8 (a cut character)

    @property
    def size(self) -> int:
        return self.end - self.start


def group_units(pieces: list[bytes]) -> list[Unit]:
    """Group token byte strings into units that end on grapheme boundaries.

    A token boundary ends a unit when the bytes before it end a grapheme cluster of the decoded
    text. Bytes that are not valid UTF-8 (a character cut by the context window, or a model that
    produced a stray continuation byte) each form their own cluster, so they never swallow the text
    after them.
    """
    data = b"".join(pieces)
    # surrogateescape maps every invalid byte to one lone surrogate (U+DC80..U+DCFF): one char per bad byte.
    decoded = data.decode("utf-8", errors="surrogateescape")
    boundaries = {0}  # byte offsets where a grapheme cluster starts or the text ends
    offset = 0
    for cluster in regex.findall(r"\X", decoded):
        # regex keeps a lone surrogate as its own cluster (grapheme break property Control).
        offset += sum(1 if 0xDC80 <= ord(c) <= 0xDCFF else len(c.encode("utf-8")) for c in cluster)
        boundaries.add(offset)
    units: list[Unit] = []
    start_token, start_byte, position = 0, 0, 0
    for index, piece in enumerate(pieces):
        position += len(piece)
        if position in boundaries:
            chunk = data[start_byte:position]
            text = escape_bytes(chunk)
            units.append(Unit(start_token, index + 1, text, complete=is_whole(chunk)))
            start_token, start_byte = index + 1, position
    return units


def is_whole(data: bytes) -> bool:
    """True when `data` is valid UTF-8: whole characters only."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def complete_prefix_length(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 sequence.

    Streamed text is cut there: the bytes after it may still become a character with the next token.
    Only a trailing *incomplete* sequence (a lead byte without all its continuation bytes) is held back.
    """
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:  # ASCII: everything before and including it is whole
            return len(data)
        if byte >= 0xC0:  # a lead byte: how many bytes should its sequence have?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if back < need else len(data)
    return len(data)  # only continuation bytes: invalid, nothing will complete it


def unit_labels(pieces: list[bytes]) -> list[str]:
    """A label per token for axes and dropdowns: its unit's text, with `(i/n)` when the unit has n tokens."""
    labels: list[str] = []
    for unit in group_units(pieces):
        for i in range(unit.start, unit.end):
            if unit.size == 1:
                labels.append(unit.text)
            else:
                labels.append(f"{unit.text}({i - unit.start + 1}/{unit.size})")
    return labels


class TokenCodec:
    """What each token of one tokenizer adds to the text, as bytes; its display label; how a prompt starts and ends.

    Built once per model (about 0.2 s for GPT-2's 50,257 tokens): the decoding loop looks bytes up
    in a table instead of calling the tokenizer per token.
    """

    def __init__(self, tokenizer, vocab_size: int | None = None):
        from transformers import BertTokenizer, BertTokenizerFast

        self.tokenizer = tokenizer
        self.wordpiece = isinstance(tokenizer, (BertTokenizer, BertTokenizerFast))
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        vocab_size = max(vocab_size or 0, len(tokens))
        self.special_ids = frozenset(i for i in tokenizer.all_special_ids if i is not None)
        # Byte-level BPE can spell any text, so it has no unknown token (GPT-2 names <|endoftext|> as one).
        unk = tokenizer.unk_token_id if self.wordpiece else None
        if self.wordpiece:
            # [CLS] opens every sequence and [SEP] closes it, as these checkpoints were trained (UER-py's lm format).
            self.bos_id = tokenizer.cls_token_id
            self.eos_ids = frozenset(i for i in (tokenizer.sep_token_id,) if i is not None)
            self._strings = [t or "" for t in tokens]
            self._bytes = [(s[2:] if s.startswith("##") else s).encode("utf-8") for s in self._strings]
        else:
            self.bos_id = None
            self.eos_ids = frozenset(i for i in (tokenizer.eos_token_id,) if i is not None)
            self._strings = [t or "" for t in tokens]
            self._bytes = _byte_level_bytes(tokenizer, self._strings)
        # Tokens with no text of their own ([CLS], [SEP], [PAD], <|endoftext|>): shown by name, add nothing to
        # the text. [UNK] keeps its name in the text, so a character the vocabulary lacks is visibly lost.
        self.silent_ids = frozenset(i for i in self.special_ids if i != unk)
        self.unk_id = unk
        # Padded embeddings (random models, some checkpoints) have ids no text maps to.
        for i in range(len(self._bytes), vocab_size):
            self._strings.append(f"<id {i}>")
            self._bytes.append(b"")
        self.silent_ids = self.silent_ids | frozenset(range(len(tokens), vocab_size))
        self.start_id = self.bos_id if self.bos_id is not None else tokenizer.eos_token_id

    def __len__(self) -> int:
        return len(self._bytes)

    def encode(self, text: str) -> list[int]:
        """The prompt's token ids, as the model expects them to start (WordPiece: after [CLS])."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    def is_silent(self, token_id: int) -> bool:
        """No text of its own: special tokens, and ids outside the vocabulary (the model itself rejects those)."""
        return token_id in self.silent_ids or not 0 <= token_id < len(self._bytes)

    def piece(self, token_id: int, previous_id: int | None = None) -> bytes:
        """The bytes `token_id` adds to the text when it follows `previous_id`."""
        if self.is_silent(token_id):
            return b""
        data = self._bytes[token_id]
        if not self.wordpiece or previous_id is None or self.is_silent(previous_id) or not data:
            return data
        if self._strings[token_id].startswith("##"):
            return data  # continues the previous word
        before = self._bytes[previous_id].decode("utf-8", errors="replace")[-1:]
        after = data.decode("utf-8", errors="replace")[:1]
        if not before or _wide(before) or _wide(after) or after in _CLOSING or before in _OPENING or before.isspace():
            return data
        return b" " + data

    def pieces(self, ids: list[int], previous_id: int | None = None) -> list[bytes]:
        """The bytes of each token of `ids` in sequence (`previous_id`: the token before the first)."""
        out = []
        for token_id in ids:
            out.append(self.piece(token_id, previous_id))
            previous_id = token_id
        return out

    def label(self, token_id: int, previous_id: int | None = None) -> str:
        """A name for one token after `previous_id`: its text if it is whole characters, else its bytes as \\xNN.

        Special tokens show their names ([CLS], <|endoftext|>).
        """
        if not 0 <= token_id < len(self._strings):
            return f"<id {token_id}>"
        if token_id in self.silent_ids or token_id == self.unk_id:
            return self._strings[token_id]
        return escape_bytes(self.piece(token_id, previous_id))

    def token_bytes(self, token_id: int) -> bytes:
        """The token's own bytes, context-free (a WordPiece `##x` without its marker)."""
        return self._bytes[token_id]

    def decode(self, ids: list[int], previous_id: int | None = None) -> str:
        """Text of a token sequence; invalid bytes as \\xNN."""
        return escape_bytes(b"".join(self.pieces(ids, previous_id)))


def _byte_level_bytes(tokenizer, strings: list[str]) -> list[bytes]:
    """GPT-2's byte-level BPE writes each byte as one printable character: map every token back to its bytes."""
    byte_of = _byte_decoder()
    added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    out = []
    for s in strings:
        if s in added or not all(c in byte_of for c in s):
            out.append(s.encode("utf-8"))  # added tokens are stored as plain text
        else:
            out.append(bytes(byte_of[c] for c in s))
    return out


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}
