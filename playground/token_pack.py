"""A run's token records, packed for the history: typed arrays in one zlib-compressed BLOB instead of JSON text.

A 128-token run with 10 alternatives per token is about 160 kB of JSON (every key, every digit spelled out for
every alternative); the same records as arrays (ids as the smallest integer type that holds them, probabilities as
float32 wherever that is exact, texts only where they are not simply their bytes) compress to a fraction of it.
`unpack_tokens(pack_tokens(t))` equals `t` exactly, field by field (floats to the bit). Records of a shape this
format does not describe (a field added later, a type it does not expect) are kept as compressed JSON instead, so
nothing is ever lost. numpy and zlib are kept libraries; the layout is ours, as no library stores these records.

Layout: MAGIC, then zlib(header length (4 bytes, little-endian), header (JSON), the arrays' bytes one after another).
The header lists the parts (prompt, output) with their record counts and every array's name, dtype and length.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

MAGIC = b"PGT1"  # typed arrays
MAGIC_JSON = b"PGJ1"  # compressed JSON: records this format does not describe
RECORD_KEYS = {"position", "token_id", "text", "is_prompt", "raw_prob", "prob", "rank", "entropy_bits", "top", "bytes"}
TOP_KEYS = {"token_id", "text", "prob", "bytes"}
FLOAT_FIELDS = ("raw_prob", "prob", "entropy_bits")
INT32 = np.iinfo(np.int32)


class _Unpackable(Exception):
    """The records have a shape the array layout does not describe: keep them as JSON."""


def _ints(values: list, signed: bool = False) -> np.ndarray:
    """The smallest integer array that holds `values` exactly."""
    if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise _Unpackable
    low, high = (min(values), max(values)) if values else (0, 0)
    for dtype in ((np.int8, np.int16, np.int32, np.int64) if signed or low < 0 else (np.uint8, np.uint16, np.uint32, np.uint64)):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.array(values, dtype=dtype)
    raise _Unpackable


def _floats(values: list) -> np.ndarray:
    """float32 when every value survives the trip through it exactly, else float64."""
    if any(isinstance(v, bool) or not isinstance(v, float) for v in values):
        raise _Unpackable
    wide = np.array(values, dtype=np.float64)
    narrow = wide.astype(np.float32)
    return narrow if np.array_equal(narrow.astype(np.float64), wide, equal_nan=True) else wide


def _optional_floats(values: list) -> tuple[np.ndarray, np.ndarray]:
    """(1 where the value is None, the other values)."""
    missing = np.array([v is None for v in values], dtype=np.uint8)
    return missing, _floats([v for v in values if v is not None])


def _texts(texts: list, raw: list[bytes]) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Texts stored only where they are not their bytes read as UTF-8: (stored flag, lengths, UTF-8 of the stored)."""
    stored, blobs = [], []
    for text, data in zip(texts, raw):
        if not isinstance(text, str):
            raise _Unpackable
        try:
            same = data.decode("utf-8") == text
        except UnicodeDecodeError:
            same = False
        stored.append(0 if same else 1)
        if not same:
            blobs.append(text.encode("utf-8", "surrogatepass"))  # a lone surrogate stays exactly what it was
    return np.array(stored, dtype=np.uint8), _ints([len(b) for b in blobs]), b"".join(blobs)


def _byte_strings(items: list) -> list[bytes]:
    """Lists of byte values (0-255) as bytes."""
    out = []
    for item in items:
        if not isinstance(item, list) or any(isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= 255 for b in item):
            raise _Unpackable
        out.append(bytes(item))
    return out


def _columns(records: list[dict]) -> dict[str, np.ndarray | bytes]:
    """One part's records as named arrays."""
    for record in records:
        if set(record) != RECORD_KEYS or not isinstance(record["top"], list) or not isinstance(record["is_prompt"], bool):
            raise _Unpackable
        if any(not isinstance(a, dict) or set(a) != TOP_KEYS for a in record["top"]):
            raise _Unpackable
    tops = [a for record in records for a in record["top"]]
    raw = _byte_strings([r["bytes"] for r in records])
    top_raw = _byte_strings([a["bytes"] for a in tops])
    columns: dict[str, np.ndarray | bytes] = {
        "position": _ints([r["position"] for r in records], signed=True),
        "token_id": _ints([r["token_id"] for r in records], signed=True),
        "is_prompt": np.array([r["is_prompt"] for r in records], dtype=np.uint8),
        "rank_missing": np.array([r["rank"] is None for r in records], dtype=np.uint8),
        "rank": _ints([r["rank"] for r in records if r["rank"] is not None], signed=True),
        "bytes_len": _ints([len(b) for b in raw]), "bytes": b"".join(raw),
        "top_count": _ints([len(r["top"]) for r in records]),
        "top_id": _ints([a["token_id"] for a in tops], signed=True),
        "top_prob": _floats([a["prob"] for a in tops]),
        "top_bytes_len": _ints([len(b) for b in top_raw]), "top_bytes": b"".join(top_raw),
    }
    for name in FLOAT_FIELDS:
        columns[f"{name}_missing"], columns[name] = _optional_floats([r[name] for r in records])
    columns["text_stored"], columns["text_len"], columns["text"] = _texts([r["text"] for r in records], raw)
    columns["top_text_stored"], columns["top_text_len"], columns["top_text"] = _texts([a["text"] for a in tops], top_raw)
    return columns


def pack_tokens(tokens: dict | None) -> bytes | None:
    """A run's token records ({"prompt": [...], "output": [...]}, as `TokenRecord.to_dict` makes them) as a BLOB."""
    if tokens is None:
        return None
    try:
        if not isinstance(tokens, dict) or not all(isinstance(v, list) for v in tokens.values()):
            raise _Unpackable
        header, chunks = {"parts": [], "arrays": []}, []
        for part, records in tokens.items():
            header["parts"].append([part, len(records)])
            for name, array in _columns(records).items():
                data = array if isinstance(array, bytes) else array.tobytes()
                header["arrays"].append([f"{part}.{name}", "bytes" if isinstance(array, bytes) else array.dtype.str, len(data)])
                chunks.append(data)
        head = json.dumps(header, separators=(",", ":")).encode("utf-8")
        return MAGIC + zlib.compress(struct.pack("<I", len(head)) + head + b"".join(chunks), 9)
    except (_Unpackable, TypeError, ValueError, OverflowError):
        return MAGIC_JSON + zlib.compress(json.dumps(tokens, ensure_ascii=False).encode("utf-8", "surrogatepass"), 9)


def unpack_tokens(blob: bytes | None) -> dict | None:
    """The token records `pack_tokens` packed, exactly."""
    if blob is None:
        return None
    magic, body = bytes(blob[:4]), zlib.decompress(blob[4:])
    if magic == MAGIC_JSON:
        return json.loads(body.decode("utf-8", "surrogatepass"))
    if magic != MAGIC:
        raise ValueError(f"not packed token records (starts with {magic!r})")
    (head_len,) = struct.unpack_from("<I", body)
    header = json.loads(body[4:4 + head_len])
    arrays, offset = {}, 4 + head_len
    for name, dtype, length in header["arrays"]:
        data = body[offset:offset + length]
        arrays[name] = data if dtype == "bytes" else np.frombuffer(data, dtype=np.dtype(dtype))
        offset += length
    return {part: _records({k.split(".", 1)[1]: v for k, v in arrays.items() if k.split(".", 1)[0] == part}, count)
            for part, count in header["parts"]}


def _split(lengths: np.ndarray, blob: bytes) -> list[bytes]:
    ends = np.cumsum(lengths.astype(np.int64)).tolist()
    return [blob[start:end] for start, end in zip([0, *ends[:-1]], ends)]


def _texts_back(stored: np.ndarray, lengths: np.ndarray, blob: bytes, raw: list[bytes]) -> list[str]:
    kept = iter(b.decode("utf-8", "surrogatepass") for b in _split(lengths, blob))
    return [next(kept) if flag else data.decode("utf-8") for flag, data in zip(stored.tolist(), raw)]


def _optional_back(missing: np.ndarray, values: np.ndarray) -> list[float | None]:
    present = iter(values.tolist())
    return [None if flag else next(present) for flag in missing.tolist()]


def _records(a: dict, count: int) -> list[dict]:
    raw = _split(a["bytes_len"], a["bytes"])
    top_raw = _split(a["top_bytes_len"], a["top_bytes"])
    texts = _texts_back(a["text_stored"], a["text_len"], a["text"], raw)
    top_texts = _texts_back(a["top_text_stored"], a["top_text_len"], a["top_text"], top_raw)
    floats = {name: _optional_back(a[f"{name}_missing"], a[name]) for name in FLOAT_FIELDS}
    ranks = _optional_back(a["rank_missing"], a["rank"])
    top_ids, top_probs = a["top_id"].tolist(), a["top_prob"].tolist()
    positions, token_ids, prompts, counts = (a["position"].tolist(), a["token_id"].tolist(), a["is_prompt"].tolist(),
                                             a["top_count"].tolist())
    records, t = [], 0
    for i in range(count):
        top = [{"token_id": top_ids[j], "text": top_texts[j], "prob": top_probs[j], "bytes": list(top_raw[j])}
               for j in range(t, t + counts[i])]
        t += counts[i]
        records.append({"position": positions[i], "token_id": token_ids[i], "text": texts[i], "is_prompt": bool(prompts[i]),
                        "raw_prob": floats["raw_prob"][i], "prob": floats["prob"][i], "rank": ranks[i],
                        "entropy_bits": floats["entropy_bits"][i], "top": top, "bytes": list(raw[i])})
    return records
