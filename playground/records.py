"""What a run produces: token records with the model's probabilities, the run's result, and its history row."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from .config import GenerationSettings
from .text import TokenCodec, Unit, group_units


@dataclass(frozen=True)
class BackendInfo:
    """What ran a generation, shown beside each output and stored with each run."""

    model: str  # display name of the model, e.g. "gpt2" or "demo-gpt2"
    backend: str  # "torch", "onnx" or "remote"
    variant: str  # "fp32", "fp16", "int8", "int4"; a serving engine's name for its model
    provider: str  # where it really runs: "cpu", "cuda:0", "CPUExecutionProvider", ...
    context_length: int
    notice: str | None = None  # e.g. "CUDA requested but not available: running on the CPU"

    def label(self) -> str:
        return f"{self.model} · {self.backend} {self.variant} · {self.provider}"


class Alternative(NamedTuple):
    """A token the model could have chosen at a position, with its raw probability."""

    token_id: int
    text: str  # display text: the characters, or \xNN for bytes that are not a whole character
    prob: float
    bytes: bytes  # exactly what it would have added to the text


@dataclass
class TokenRecord:
    """One token of a run with what the model thought of it.

    For prompt tokens the probabilities are those of the token given its prefix (None for the first,
    which has no prefix). For generated tokens, `prob` is the probability in the distribution that was
    actually sampled from (after penalties and warpers) and `raw_prob` the model's own softmax.
    """

    position: int  # index in the sequence the model saw
    token_id: int
    text: str  # display text: its characters, \xNN for bytes that are not a whole character, or a special token's name
    is_prompt: bool
    raw_prob: float | None
    prob: float | None
    rank: int | None  # 1 = the model's most likely token
    entropy_bits: float | None  # of the model's raw distribution at this position
    top: list[Alternative] = field(default_factory=list)  # most likely first
    bytes: bytes = b""  # exactly what this token added to the text (empty for [CLS], <|endoftext|>, ...)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["bytes"] = list(self.bytes)
        data["top"] = [{"token_id": a.token_id, "text": a.text, "prob": a.prob, "bytes": list(a.bytes)} for a in self.top]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TokenRecord":
        # Runs saved before records had bytes: recover them from the text where it is whole characters.
        def raw(item: dict) -> bytes:
            return bytes(item["bytes"]) if "bytes" in item else item.get("text", "").encode("utf-8", errors="replace")

        top = [Alternative(a["token_id"], a["text"], a["prob"], raw(a)) for a in data.get("top", [])]
        return cls(**(data | {"top": top, "bytes": raw(data)}))


@dataclass
class GenerationResult:
    """A run as it stands: filled in while streaming, complete once the loop returns."""

    prompt: str
    settings: GenerationSettings
    info: BackendInfo
    prompt_tokens: list[TokenRecord] = field(default_factory=list)
    tokens: list[TokenRecord] = field(default_factory=list)
    text: str = ""  # the generated text, cut before a stop sequence
    finish_reason: str = "running"  # length, eos, stop_sequence, stopped
    notices: list[str] = field(default_factory=list)
    dropped_prompt_tokens: int = 0
    ttft_ms: float | None = None
    decode_ms: float = 0.0
    run_id: int | None = None  # set once the run is saved to the history
    parent_run_id: int | None = None  # for a branch: the run it branched from ...
    branch_position: int | None = None  # ... and the sequence position of the swapped token
    group_id: str | None = None  # runs drawn together (N samples, a sweep) share one; None for a run of one
    sample_index: int | None = None  # this run's place in its group (its seed is the group's seed + this, per cell)
    intervention: dict | None = None  # what an experiment changed in the model (experiments.Intervention.to_dict())
    sequence_score: float | None = None  # beam search: the hypothesis' length-normalised score (transformers' sequences_scores)
    beam_tree: dict | None = None  # beam search: every step's continuations (decoding/beam.py's BeamSearch.tree)

    @property
    def sequence_logprob(self) -> float:
        """Sum of the natural log-probabilities of the generated tokens under the model's raw distribution
        (not the warped one: so samples drawn at different temperatures compare on one scale)."""
        return sum(math.log(max(t.raw_prob, 1e-45)) for t in self.tokens if t.raw_prob is not None)

    @property
    def perplexity(self) -> float | None:
        """exp(mean NLL) of the generated tokens under the model's raw distribution; None before the first token."""
        return _perplexity(self.tokens)

    @property
    def prompt_perplexity(self) -> float | None:
        """exp(mean NLL) of the prompt tokens that have a prefix; None for a prompt of one token."""
        return _perplexity(self.prompt_tokens)

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time spent producing them (the first token's cost is the prefill)."""
        steps = len(self.tokens) - 1
        return steps / (self.decode_ms / 1000) if steps > 0 and self.decode_ms > 0 else None

    def units(self) -> list[tuple[Unit, list[TokenRecord]]]:
        """Prompt and output tokens grouped into whole characters (see playground.text), each with its records."""
        records = self.prompt_tokens + self.tokens
        return [(unit, records[unit.start:unit.end]) for unit in group_units([r.bytes for r in records])]

    def units_json(self) -> list[dict]:
        """The units for the API: their text, the positions of their tokens, and their joint probability."""
        out = []
        for unit, records in self.units():
            probs = [r.raw_prob for r in records]
            joint = math.prod(probs) if all(p is not None for p in probs) else None
            out.append({"text": unit.text, "positions": [r.position for r in records], "complete": unit.complete,
                        "is_prompt": records[-1].is_prompt, "joint_prob": joint})
        return out

    def metrics(self) -> dict:
        return {
            "ttft_ms": self.ttft_ms,
            "decode_ms": self.decode_ms,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "prompt_token_count": len(self.prompt_tokens),
            "new_token_count": len(self.tokens),
            "dropped_prompt_tokens": self.dropped_prompt_tokens,
            "prompt_perplexity": self.prompt_perplexity,
            "sequence_logprob": self.sequence_logprob,
            "perplexity": self.perplexity,
        }

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "model": self.info.model,
            "backend": self.info.backend,
            "variant": self.info.variant,
            "provider": self.info.provider,
            "settings": self.settings.to_dict(),
            "metrics": self.metrics(),
            "notices": list(self.notices),
            "run_id": self.run_id,
            "parent_run_id": self.parent_run_id,
            "branch_position": self.branch_position,
            "group_id": self.group_id,
            "sample_index": self.sample_index,
            "intervention": self.intervention,
            "sequence_score": self.sequence_score,
            "beam_tree": self.beam_tree,
            "prompt_tokens": [t.to_dict() for t in self.prompt_tokens],
            "tokens": [t.to_dict() for t in self.tokens],
            "units": self.units_json(),
        }


def _perplexity(records: list[TokenRecord]) -> float | None:
    """exp(mean NLL) of the records that have a raw probability; None when none has."""
    probs = [t.raw_prob for t in records if t.raw_prob is not None]
    if not probs:
        return None
    return math.exp(-sum(math.log(max(p, 1e-45)) for p in probs) / len(probs))


def saved_row(result: GenerationResult, status: str, error: str | None = None, model_sha256: str | None = None) -> dict:
    """A run as the history stores it: a row of the runs table (history.py), JSON columns as Python values.
    `result_from_saved` reads it back; the two are the one mapping between a result and a row.

    `status`: complete, stopped or error; `model_sha256`: the hash of the model's files the run was made with.
    """
    return {
        "model": result.info.model,
        "backend": result.info.backend,
        "variant": result.info.variant,
        "provider": result.info.provider,
        "prompt": result.prompt,
        "settings": result.settings.to_dict(),
        "output": result.text,
        "tokens": {"prompt": [t.to_dict() for t in result.prompt_tokens], "output": [t.to_dict() for t in result.tokens]},
        "metrics": result.metrics() | {"finish_reason": result.finish_reason, "notices": list(result.notices)},
        "status": status,
        "error": error,
        "model_sha256": model_sha256,
        "parent_run_id": result.parent_run_id,
        "branch_position": result.branch_position,
        "group_id": result.group_id,
        "sample_index": result.sample_index,
        "intervention": result.intervention,
        # Beam search's sequence score, and its tree with the first returned sequence (the group's other rows would repeat it).
        "beam": None if result.beam_tree is None else {
            "sequence_score": result.sequence_score, "tree": result.beam_tree if not result.sample_index else None},
    }


def result_from_saved(row: dict, codec: TokenCodec | None = None) -> GenerationResult:
    """A GenerationResult from a history row (`saved_row`'s, JSON columns decoded), for the views that show a stored run.

    Runs saved before records carried bytes get them back from `codec` (the run's model), so their
    multi-byte characters show whole instead of as U+FFFD.
    """
    settings = dict(row.get("settings") or {})
    settings["stop_sequences"] = tuple(settings.get("stop_sequences") or ())
    metrics = row.get("metrics") or {}
    info = BackendInfo(model=row.get("model") or "?", backend=row.get("backend") or "?", variant=row.get("variant") or "?",
                       provider=row.get("provider") or "?", context_length=0)
    tokens = row.get("tokens") or {}
    if codec is not None and any("bytes" not in t for part in tokens.values() for t in part):
        tokens = _with_bytes(tokens, codec)
    return GenerationResult(
        prompt=row.get("prompt") or "",
        settings=GenerationSettings(**settings),
        info=info,
        prompt_tokens=[TokenRecord.from_dict(t) for t in tokens.get("prompt", [])],
        tokens=[TokenRecord.from_dict(t) for t in tokens.get("output", [])],
        text=row.get("output") or "",
        finish_reason=metrics.get("finish_reason") or row.get("status") or "?",
        notices=list(metrics.get("notices") or []),
        dropped_prompt_tokens=metrics.get("dropped_prompt_tokens") or 0,
        ttft_ms=metrics.get("ttft_ms"),
        decode_ms=metrics.get("decode_ms") or 0.0,
        run_id=row.get("id"),
        parent_run_id=row.get("parent_run_id"),
        branch_position=row.get("branch_position"),
        group_id=row.get("group_id"),
        sample_index=row.get("sample_index"),
        intervention=row.get("intervention"),
        sequence_score=(row.get("beam") or {}).get("sequence_score"),
        beam_tree=(row.get("beam") or {}).get("tree"),
    )


def _with_bytes(tokens: dict, codec: TokenCodec) -> dict:
    """Fill in the bytes and display texts of stored records (and their alternatives) from their token ids."""
    records = [dict(t) for t in tokens.get("prompt", [])] + [dict(t) for t in tokens.get("output", [])]
    previous = None
    for record in records:
        if record["token_id"] < len(codec):
            record["bytes"] = list(codec.piece(record["token_id"], previous))
            record["text"] = codec.label(record["token_id"], previous)
            record["top"] = [a | {"bytes": list(codec.piece(a["token_id"], previous)), "text": codec.label(a["token_id"], previous)}
                             for a in record.get("top", []) if a["token_id"] < len(codec)]
        previous = record["token_id"]
    n = len(tokens.get("prompt", []))
    return {"prompt": records[:n], "output": records[n:]}
