"""Generation settings: one validated dataclass shared by the UI, the API, the history and the benchmark."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import SettingsError

MAX_PROMPT_CHARS = 200_000  # beyond this a prompt is refused before tokenizing (the context keeps far less anyway)
MAX_STOP_SEQUENCES = 8
MAX_STOP_SEQUENCE_CHARS = 200
MAX_SEED = 2**63 - 1
MAX_BEAMS = 16
MAX_CONTRASTIVE_K = 16  # candidates of contrastive search: rows of the batch, like beams
EARLY_STOPPING = (False, True, "never")


@dataclass(frozen=True)
class Range:
    """A number setting's declaration: its allowed range (validated), and the part of it the UI's slider offers."""

    low: float
    high: float
    low_open: bool = False  # (low, high] instead of [low, high]
    ui: tuple[float, float, float] | None = None  # the slider's (minimum, maximum, step); None: no slider of its own

    @property
    def interval(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low}, {self.high}]"


def setting(default: Any, range_: Range | None = None, **kwargs: Any) -> Any:
    """A GenerationSettings field with its range (as metadata)."""
    return field(default=default, metadata={"range": range_} if range_ else {}, **kwargs)


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings, declared once: the UI's inputs, the `/generate` API's parameters and their order, the
    validation and the history all derive from these fields. Defaults match transformers' `generate`, except
    a sensible `max_new_tokens`; `do_sample` False is greedy (the warpers then do not apply); `top_k` 0,
    `top_p`/`typical_p`/`repetition_penalty` 1 and `no_repeat_ngram_size` 0 are off; `stop_sequences` are
    up to 8 non-empty strings of at most 200 characters; a `seed` of None draws a fresh one (the one used is
    recorded); `top_alternatives` is how many alternatives each token record keeps; `min_new_tokens` (0: off, at
    most `max_new_tokens`) holds the end of text back that long, and `ignore_eos` for the whole run (the end-of-text
    token's probability is set to 0; a stop sequence still ends it). `max_new_tokens` is also checked against the
    model's context (`validate_for_context`).

    The order is the `/generate` API's positional order: a new setting goes at the end.
    """

    max_new_tokens: int = setting(64, Range(1, 100_000, ui=(1, None, 1)))  # the slider's maximum is the model's context - 1
    do_sample: bool = setting(True)
    temperature: float = setting(1.0, Range(0, 100, low_open=True, ui=(0.01, 3.0, 0.01)))
    top_k: int = setting(50, Range(0, 100_000, ui=(0, 200, 1)))
    top_p: float = setting(1.0, Range(0, 1, low_open=True, ui=(0.01, 1.0, 0.01)))
    repetition_penalty: float = setting(1.0, Range(0, 100, low_open=True, ui=(0.5, 3.0, 0.05)))
    seed: int | None = setting(None, Range(0, MAX_SEED))
    typical_p: float = setting(1.0, Range(0, 1, low_open=True, ui=(0.01, 1.0, 0.01)))
    no_repeat_ngram_size: int = setting(0, Range(0, 64, ui=(0, 10, 1)))
    stop_sequences: tuple[str, ...] = field(default_factory=tuple)
    top_alternatives: int = setting(10, Range(1, 100, ui=(1, 50, 1)))
    # Length controls: no end of text before min_new_tokens new tokens (transformers' MinNewTokensLengthLogitsProcessor);
    # ignore_eos never lets the model end the text (its end-of-text ids suppressed), so a run goes on to max_new_tokens.
    min_new_tokens: int = setting(0, Range(0, 100_000, ui=(0, None, 1)))  # the slider's maximum is the model's context - 1
    ignore_eos: bool = setting(False)
    # Beam search (decoding/beam.py): `num_beams` 1 is off; the run's samples are its best `num_samples` beams.
    # `length_penalty` and `early_stopping` (True, False or "never") mean what they mean in transformers' `generate`.
    num_beams: int = setting(1, Range(1, MAX_BEAMS, ui=(1, MAX_BEAMS, 1)))
    length_penalty: float = setting(1.0, Range(-10, 10, ui=(-2.0, 3.0, 0.1)))
    early_stopping: bool | str = setting(False)
    # Contrastive search (decoding/contrastive.py): `penalty_alpha` > 0 with `top_k` > 1 candidates, greedy; 0 is off.
    penalty_alpha: float = setting(0.0, Range(0, 1, ui=(0.0, 1.0, 0.05)))

    @classmethod
    def from_user(cls, **values: Any) -> "GenerationSettings":
        """Build settings from untrusted input (UI, API, CLI), coercing benign forms and validating the rest.

        Unknown keys are rejected so that a typo in an API call does not silently fall back to a default.
        `None` means "use the default" (for `seed`: draw a random one).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise SettingsError(key="settings.unknown", unknown=", ".join(unknown), known=", ".join(sorted(names)))
        clean: dict[str, Any] = {}
        for name, value in values.items():
            if value is None:
                continue  # default; for seed the default None means "draw a random seed"
            clean[name] = _coerce(name, value)
        return cls(**clean).validate()

    def validate(self) -> "GenerationSettings":
        """Raise SettingsError naming the bad value and the allowed range; return self when all is well."""
        for f in fields(self):
            value = getattr(self, f.name)
            if "range" in f.metadata and value is not None:
                _check_range(f.name, value, f.metadata["range"])
        if len(self.stop_sequences) > MAX_STOP_SEQUENCES:
            raise SettingsError(key="settings.too_many_stops", field="stop_sequences", limit=MAX_STOP_SEQUENCES, count=len(self.stop_sequences))
        for stop in self.stop_sequences:
            if not stop or len(stop) > MAX_STOP_SEQUENCE_CHARS:
                raise SettingsError(key="settings.stop_length", field="stop_sequences", limit=MAX_STOP_SEQUENCE_CHARS, length=len(stop))
        if self.min_new_tokens > self.max_new_tokens:
            raise SettingsError(key="settings.min_above_max", field="min_new_tokens", value=self.min_new_tokens,
                                most=self.max_new_tokens)
        if self.early_stopping not in EARLY_STOPPING or not isinstance(self.early_stopping, (bool, str)):
            raise SettingsError(key="settings.early_stopping", field="early_stopping", value=self.early_stopping)
        if self.num_beams > 1 and self.stop_sequences:
            raise SettingsError(key="beams.stop_sequences", field="stop_sequences")
        if self.penalty_alpha > 0:
            if self.num_beams > 1:
                raise SettingsError(key="contrastive.with_beams", field="penalty_alpha")
            if self.do_sample:
                raise SettingsError(key="contrastive.do_sample", field="do_sample")
            if not 2 <= self.top_k <= MAX_CONTRASTIVE_K:
                raise SettingsError(key="contrastive.top_k", field="top_k", value=self.top_k, most=MAX_CONTRASTIVE_K)
        return self

    def validate_for_context(self, context_length: int) -> "GenerationSettings":
        """A run must leave at least one prompt token in the model's context window."""
        if self.max_new_tokens >= context_length:
            raise SettingsError(
                key="settings.context", field="max_new_tokens", value=self.max_new_tokens, context=context_length, most=context_length - 1,
            )
        return self

    def with_seed(self) -> "GenerationSettings":
        """Settings with a concrete seed, drawing a random one when none was given, so every run can be replayed."""
        if self.seed is not None:
            return self
        return replace(self, seed=random.SystemRandom().randrange(0, 2**31))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop_sequences"] = list(self.stop_sequences)
        return data


SETTING_NAMES = tuple(f.name for f in fields(GenerationSettings))  # the declaration's order
SETTING_RANGES: dict[str, Range] = {f.name: f.metadata["range"] for f in fields(GenerationSettings) if "range" in f.metadata}
_INT_FIELDS = {f.name for f in fields(GenerationSettings) if f.type in ("int", "int | None")}
_FLOAT_FIELDS = {f.name for f in fields(GenerationSettings) if f.type == "float"}
_BOOL_FIELDS = {f.name for f in fields(GenerationSettings) if f.type == "bool"}


def as_int(name: str, value: Any) -> int:
    """A whole number from what forms and JSON send (42, 42.0, "42"); anything else is a SettingsError naming `name`."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(key="settings.not_int", name=name, value=value)
    return value


def as_float(name: str, value: Any) -> float:
    """A finite number from what forms and JSON send (0.5, "3e-4"); NaN, infinities and text are a SettingsError."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SettingsError(key="settings.not_number", name=name,
                                value=value) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingsError(key="settings.not_finite", name=name, value=value)
    return float(value)


def _coerce(name: str, value: Any) -> Any:
    """Accept what UI widgets and JSON clients naturally send (42.0 for 42, "a\\nb" for stop lists); refuse the rest."""
    if name in _INT_FIELDS:
        return as_int(name, value)
    if name in _FLOAT_FIELDS:
        return as_float(name, value)
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise SettingsError(key="settings.not_bool", name=name, value=value)
        return value
    if name == "early_stopping":
        # A form's radio or a JSON client: true/false/"never", as transformers takes them.
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "never"):
            value = {"true": True, "false": False, "never": "never"}[value.strip().lower()]
        if value not in EARLY_STOPPING or not isinstance(value, (bool, str)):
            raise SettingsError(key="settings.early_stopping", field="early_stopping", value=value)
        return value
    if name == "stop_sequences":
        if isinstance(value, str):
            # One stop sequence per line; "\n" written literally in the UI stands for a newline.
            value = [line.replace("\\n", "\n") for line in value.splitlines() if line]
        if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) for s in value):
            raise SettingsError(key="settings.not_list", value=value)
        return tuple(value)
    return value


def _check_range(name: str, value: float, allowed: Range) -> None:
    too_low = value <= allowed.low if allowed.low_open else value < allowed.low
    if too_low or value > allowed.high:
        raise SettingsError(key="settings.range", name=name, value=value, interval=allowed.interval)


def check_prompt(prompt: Any) -> str:
    """The prompt must be a string of reasonable size; invalid UTF-16 surrogates are replaced, not crashed on."""
    if prompt is None:
        return ""
    if not isinstance(prompt, str):
        raise SettingsError(key="settings.prompt_type", field="prompt",
                            type=type(prompt).__name__)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise SettingsError(
            key="settings.prompt_too_long", field="prompt", length=len(prompt), limit=MAX_PROMPT_CHARS,
        )
    # Lone surrogates (from JSON "\ud800") cannot be encoded to UTF-8 by the tokenizer.
    return prompt.encode("utf-8", "replace").decode("utf-8")
