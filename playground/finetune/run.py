"""Fine-tune a GPT-2 on your own text (full or LoRA) through the shared engine, saved as a new model folder.

    report = run_finetune(resolve_model("demo"), read_file("notes.txt"), FineTuneSettings(method="lora"),
                          "my-notes", models_dir())

`plan_finetune` checks everything that can be wrong before any training (the name, the settings, the
base model, the data) and raises a PlaygroundError that says how to fix it; `execute_plan` trains with
`training.engine.train_causal_lm` (the loop the demo models are built with), merges LoRA adapters into the
weights (peft's `merge_and_unload`), and writes `models/NAME/` in standard Hugging Face format
(model.safetensors, tokenizer files, generation_config.json, training_report.json) atomically: a cancel
or a crash leaves no folder behind. `run_finetune` is both in one call.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..config import as_float, as_int
from ..errors import ModelLoadError, PlaygroundError, SettingsError, TrainingCancelled, first_line
from ..machine import machine_description, training_threads
from ..models import ModelSource, load_torch_model, resolve_model, source_fingerprint
from ..training.engine import Schedule, blocks_loss, staged_folder, train_causal_lm
from .checkpoints import JOBS_FOLDER, JobFolder
from .data import VAL_FRACTION, PreparedData, TrainingText, block_preview, from_text, prepare_data, read_file

REPORT_FILE = "training_report.json"
METHODS = ("full", "lora")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_LEARNING_RATES = {"full": 5e-5, "lora": 2e-4}  # the usual starting points for GPT-2 small (124 M parameters) and larger
GPT2_SMALL_PARAMETERS = 124_439_808
# A smaller model takes a larger default rate: the rates above times 124 M / its parameters, at most MAX_RATE_SCALE times.
# Measured (scripts/finetune_vs_trainer.py, 2 cores, 1 thread, 2026-12-05; held-out perplexity after the default
# 3 epochs): the English demo model (2.2 M) on GPL-3 reached 737 at 5e-5, 175 at 5e-4, 121 at 1e-3 and 87 at 3e-3;
# the Chinese demo model on its corpus' held-out split (text like its own, so there is less to learn) 244 at 5e-5,
# 238 at 3e-4 and 247 at 1e-3, but none better than the base (255) at 2e-3 or 3e-3. 20x (1e-3 for the demo models)
# is the highest rate that helped in both; a plain transformers Trainer given the same seconds reached 831 and 245.
MAX_RATE_SCALE = 20
GPT2_LORA_TARGETS = ("c_attn", "c_proj")  # attention qkv and the output projections of attention and MLP (Conv1D)
EVALUATIONS_PER_RUN = 10  # default validation frequency
MAX_NAME_CHARS = 64
MAX_SEED = 2**63 - 1
Progress = Callable[[dict], None]


@dataclass(frozen=True)
class FineTuneSettings:
    """How to fine-tune. Ranges (checked by `validate`; `block_size` also against the model in `validate_for_model`):

      method                 full (every weight) or lora (low-rank adapters, merged into the weights at the end)
      learning_rate          (0, 1], or None for the method's default by the model's size (`default_learning_rate`:
                             full 5e-5, lora 2e-4 for GPT-2 small and larger; up to 20x that for smaller models)
      epochs                 1 .. 1000 passes over the training blocks (ignored when max_steps is set)
      max_steps              1 .. 1,000,000 optimizer steps, or None to train for `epochs`
      batch_size             1 .. 512 blocks per batch
      gradient_accumulation  1 .. 1024 batches per optimizer step (effective batch = batch_size x this)
      block_size             8 .. the model's context (n_positions) tokens per block
      warmup_steps           0 .. 1,000,000 steps of linear warm-up, then cosine decay to 10%; capped at the run's steps
      weight_decay           [0, 1], AdamW's, on weight matrices only
      max_grad_norm          [0, 1000]; 0 turns clipping off
      seed                   0 .. 2**63 - 1: the data split, the batch order, the adapters' initialisation, dropout
      val_fraction           [0.01, 0.5] of the blocks held out for validation
      test_fraction          0 (no test split) or (0, 0.5] of the blocks held out for a test at the end, before and after
      eval_every             1 .. 1,000,000 steps between validations, or None for about 10 per run
      checkpoint_every       1 .. 1,000,000 steps between checkpoints (a stopped run resumes from the last), or None: at
                             every validation; a cancel also writes one
      early_stopping_patience  0 .. 1000 evaluations in a row without validation loss improving by more than
                             early_stopping_min_delta, after which the run stops (0: never stops early)
      early_stopping_min_delta [0, 10], in validation loss (nats per token)
      lora_rank              1 .. 1024
      lora_alpha             (0, 10000]; the adapters' output is scaled by alpha / rank
      lora_dropout           [0, 1)
      lora_target_modules    module names to adapt; GPT-2's c_attn and c_proj by default (c_fc is the other choice)
      device                 auto (CUDA when available), cpu or cuda; CUDA trains in mixed precision, the CPU in fp32
    """

    method: str = "full"
    learning_rate: float | None = None
    epochs: int = 3
    max_steps: int | None = None
    batch_size: int = 4
    gradient_accumulation: int = 1
    block_size: int = 128
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    val_fraction: float = VAL_FRACTION
    test_fraction: float = 0.0
    eval_every: int | None = None
    checkpoint_every: int | None = None
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = GPT2_LORA_TARGETS
    device: str = "auto"

    @classmethod
    def from_user(cls, **values: Any) -> "FineTuneSettings":
        """Settings from untrusted input (UI, CLI): 42.0 for 42, "3e-4" for 3e-4, "c_attn, c_fc" for a module list.

        Unknown keys are refused (a typo must not fall back to a default); None means the default.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise SettingsError(key="finetune.unknown", unknown=", ".join(unknown), known=", ".join(sorted(names)))
        return cls(**{name: _coerce(name, value) for name, value in values.items() if value is not None}).validate()

    @property
    def effective_learning_rate(self) -> float:
        """The rate set, or the method's default for GPT-2 small; `plan_finetune` sets the default for the model it trains."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES.get(self.method, 5e-5)

    def validate(self) -> "FineTuneSettings":
        """Raise SettingsError naming the bad value and what is allowed; return self when all is well."""
        if self.method not in METHODS:
            raise SettingsError(key="finetune.method", value=self.method, allowed=", ".join(METHODS))
        if self.device not in DEVICES:
            raise SettingsError(key="finetune.device", value=self.device, allowed=", ".join(DEVICES))
        for name in ("epochs", "max_steps", "batch_size", "gradient_accumulation", "block_size", "warmup_steps", "seed",
                     "eval_every", "checkpoint_every", "early_stopping_patience", "lora_rank"):
            _check_int(name, getattr(self, name))
        for name in ("learning_rate", "weight_decay", "max_grad_norm", "val_fraction", "test_fraction", "early_stopping_min_delta",
                     "lora_alpha",
                     "lora_dropout"):
            _check_number(name, getattr(self, name))
        if self.learning_rate is not None:
            _check_range("learning_rate", self.learning_rate, 0, 1, low_open=True)
        _check_range("epochs", self.epochs, 1, 1000)
        if self.max_steps is not None:
            _check_range("max_steps", self.max_steps, 1, 1_000_000)
        _check_range("batch_size", self.batch_size, 1, 512)
        _check_range("gradient_accumulation", self.gradient_accumulation, 1, 1024)
        _check_range("block_size", self.block_size, 8, 1_000_000)
        _check_range("warmup_steps", self.warmup_steps, 0, 1_000_000)
        _check_range("weight_decay", self.weight_decay, 0, 1)
        _check_range("max_grad_norm", self.max_grad_norm, 0, 1000)
        _check_range("seed", self.seed, 0, MAX_SEED)
        _check_range("val_fraction", self.val_fraction, 0.01, 0.5)
        _check_range("test_fraction", self.test_fraction, 0, 0.5)
        if self.eval_every is not None:
            _check_range("eval_every", self.eval_every, 1, 1_000_000)
        if self.checkpoint_every is not None:
            _check_range("checkpoint_every", self.checkpoint_every, 1, 1_000_000)
        _check_range("early_stopping_patience", self.early_stopping_patience, 0, 1000)
        _check_range("early_stopping_min_delta", self.early_stopping_min_delta, 0, 10)
        _check_range("lora_rank", self.lora_rank, 1, 1024)
        _check_range("lora_alpha", self.lora_alpha, 0, 10_000, low_open=True)
        if not 0 <= self.lora_dropout < 1:
            raise SettingsError(key="settings.range", name="lora_dropout", value=self.lora_dropout, interval="[0, 1)")
        modules = self.lora_target_modules
        if (not isinstance(modules, tuple) or not modules
                or not all(isinstance(m, str) and m.replace("_", "a").replace(".", "a").isalnum() for m in modules)):
            raise SettingsError(key="finetune.targets", field="lora_target_modules", value=repr(modules))
        return self

    def validate_for_model(self, context_length: int) -> "FineTuneSettings":
        """A block must fit in the model's context window (n_positions)."""
        if self.block_size > context_length:
            raise SettingsError(key="finetune.block_size", value=self.block_size,
                                context=context_length)
        return self

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_target_modules"] = list(self.lora_target_modules)
        data["learning_rate"] = self.effective_learning_rate
        if self.method != "lora":
            for name in ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules"):
                data.pop(name)
        return data


_INT_FIELDS = {"epochs", "max_steps", "batch_size", "gradient_accumulation", "block_size", "warmup_steps", "seed", "eval_every",
               "checkpoint_every", "early_stopping_patience", "lora_rank"}
_FLOAT_FIELDS = {"learning_rate", "weight_decay", "max_grad_norm", "val_fraction", "test_fraction", "early_stopping_min_delta",
                 "lora_alpha",
                 "lora_dropout"}


def _coerce(name: str, value: Any) -> Any:
    """What UI widgets and a command line send (42.0, "42", "3e-4", "c_attn,c_proj"); anything else is refused."""
    if name in _INT_FIELDS:
        return as_int(name, value)
    if name in _FLOAT_FIELDS:
        return as_float(name, value)
    if name == "lora_target_modules":
        if isinstance(value, str):
            value = [part.strip() for part in value.replace(",", " ").split()]
        if isinstance(value, list):
            value = tuple(value)
        return value
    if name in ("method", "device") and isinstance(value, str):
        return value.strip().lower()
    return value


def _check_int(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise SettingsError(key="settings.not_int", name=name, value=value)


def _check_number(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise SettingsError(key="settings.not_finite", name=name, value=value)


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise SettingsError(key="settings.range", name=name, value=value,
                            interval=interval)


# --- the new model's name -------------------------------------------------------------------------


def check_model_name(name: Any, models_root: Path) -> Path:
    """The folder `models_root/name` for a new model: a plain, visible, unused folder name, or a PlaygroundError."""
    if not isinstance(name, str) or not name.strip():
        raise PlaygroundError(key="finetune.name_missing")
    name = name.strip()
    if "/" in name or "\\" in name or ".." in name or name in (".", "") or os.path.isabs(name):
        raise PlaygroundError(key="finetune.name_path", name=name[:100], folder=Path(models_root).name)
    if name.startswith("."):
        raise PlaygroundError(key="finetune.name_hidden", name=name)
    if len(name) > MAX_NAME_CHARS or not all(c.isalnum() or c in "-_." for c in name):
        raise PlaygroundError(key="finetune.name_chars", name=name[:100], most=MAX_NAME_CHARS)
    if name.startswith("random-"):
        raise PlaygroundError(key="finetune.name_reserved", name=name)
    out_dir = Path(models_root) / name
    if out_dir.exists():
        raise PlaygroundError(key="finetune.name_taken", name=name, folder=Path(models_root).name)
    return out_dir


# --- planning: everything checked before training -----------------------------------------------


@dataclass
class FineTunePlan:
    """A checked fine-tuning run, ready to execute."""

    base: ModelSource
    settings: FineTuneSettings
    name: str
    out_dir: Path
    data: PreparedData
    total_steps: int
    eval_every: int
    device: str  # cpu or cuda
    precision: str  # fp32, bf16 or fp16
    notices: list = field(default_factory=list)
    text: TrainingText | None = None  # the texts the blocks were made of (kept in the job's folder for a resume)
    resume: dict | None = None  # the checkpoint the run goes on from (`plan_resume`), or None: from the start
    owner: str = ""  # the login the job runs for ("" without one)
    processes: int = 1  # processes training together (accelerate launch, torchrun): each takes batch_size blocks a batch
    test_text: TrainingText | None = None  # a test file of the user's (kept in the job's folder too)

    @property
    def checkpoint_every(self) -> int:
        return self.settings.checkpoint_every or self.eval_every

    def command(self) -> str:
        """The terminal command that runs this job again: its base model, data file, name and every setting that is not
        the default (the learning rate always, as the plan resolved it). Pasted text has no file: DATA_FILE stands for it."""
        import shlex

        data = self.data.stats["source"] if self.text is not None and self.text.source != PASTED_SOURCE else PASTED_FILE
        parts = ["python", "-m", "playground.finetune", "--model", self.base.requested, "--data", data, "--name", self.name]
        if self.test_text is not None:
            parts += ["--test-data", self.test_text.source if self.test_text.source != PASTED_SOURCE else "TEST_FILE.txt"]
        defaults = FineTuneSettings()
        for name, flag in CLI_FLAGS.items():
            value = getattr(self.settings, name)
            if value == getattr(defaults, name) and name != "learning_rate":
                continue
            if self.settings.method != "lora" and name.startswith("lora_"):
                continue
            parts += [flag, ",".join(value) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)]
        return " ".join(shlex.quote(part) for part in parts)

    def identity(self) -> dict:
        """What a checkpoint must match to be resumed into this run: the base model's weights, the settings, the data."""
        return {"base_sha256": source_fingerprint(self.base), "settings": self.settings.to_dict(),
                "data_sha256": self.data.stats.get("sha256"), "test_sha256": self.data.stats.get("test_sha256"),
                "total_steps": self.total_steps,
                "processes": self.processes}

    def summary(self) -> dict:
        """What the run will do, for a user to confirm: data statistics, preview, steps, device, notices."""
        return {"name": self.name, "base_model": self.base.name, "settings": self.settings.to_dict(), "data": self.data.stats,
                "preview": self.data.preview, "blocks": block_preview(self.data.train_blocks, self.base.codec),
                "command": self.command(), "total_steps": self.total_steps, "device": self.device, "precision": self.precision,
                "processes": self.processes,
                "notices": [str(n) for n in self.notices]}


PASTED_SOURCE = "pasted text"  # data.from_text's source
PASTED_FILE = "DATA_FILE.txt"  # what the command says for pasted text, which has no file
# The command line's flag of each setting (playground/finetune/__main__.py declares them).
CLI_FLAGS = {"method": "--method", "learning_rate": "--lr", "epochs": "--epochs", "max_steps": "--max-steps",
             "batch_size": "--batch-size", "gradient_accumulation": "--grad-accum", "block_size": "--block-size",
             "warmup_steps": "--warmup-steps", "weight_decay": "--weight-decay", "max_grad_norm": "--max-grad-norm", "seed": "--seed",
             "val_fraction": "--val-fraction", "test_fraction": "--test-fraction", "eval_every": "--eval-every",
             "checkpoint_every": "--checkpoint-every", "early_stopping_patience": "--early-stopping-patience",
             "early_stopping_min_delta": "--early-stopping-min-delta", "lora_rank": "--lora-rank", "lora_alpha": "--lora-alpha",
             "lora_dropout": "--lora-dropout", "lora_target_modules": "--lora-targets", "device": "--device"}


def as_training_text(data: TrainingText | str | Path, column: str | None = None) -> TrainingText:
    """TrainingText as is; a Path is a file to read (`column` for CSV/JSONL); a str is pasted text."""
    if isinstance(data, TrainingText):
        return data
    if isinstance(data, Path):
        return read_file(data, column)
    return from_text(data)


def check_base(base) -> object:
    """The base model's config, refusing anything but GPT-2 before any weights are read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(base.location, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(key="finetune.no_config", field="model", model=base.requested, error=first_line(exc)) from exc
    if config.model_type != "gpt2":
        raise ModelLoadError(key="finetune.not_gpt2", model=base.requested, model_type=config.model_type)
    return config


def gpt2_parameters(config) -> int:
    """A GPT-2's parameter count from its config alone (token and position embeddings, the blocks, the final LayerNorm;
    the output layer shares the token embedding's weights)."""
    d, inner = config.n_embd, config.n_inner or 4 * config.n_embd
    block = (d * 3 * d + 3 * d) + (d * d + d) + 2 * 2 * d + (d * inner + inner) + (inner * d + d)  # attention, 2 LayerNorms, MLP
    return config.vocab_size * d + config.n_positions * d + config.n_layer * block + 2 * d


def default_learning_rate(method: str, parameters: int) -> float:
    """The method's default rate for a model of `parameters`: DEFAULT_LEARNING_RATES for GPT-2 small (124 M) and larger,
    times 124 M / parameters for smaller ones, at most MAX_RATE_SCALE times (1e-3 full, 4e-3 LoRA for the 2.2 M demo models)."""
    scale = min(MAX_RATE_SCALE, max(1.0, GPT2_SMALL_PARAMETERS / parameters))
    return float(f"{DEFAULT_LEARNING_RATES[method] * scale:.2g}")  # 1.5e-4, not 0.00015189...


def choose_device(requested: str) -> tuple[str, str]:
    """(device, precision): CUDA with bf16 where supported (else fp16 with loss scaling); the CPU in fp32."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise SettingsError(key="finetune.no_cuda")
    if requested == "cpu" or not torch.cuda.is_available():
        return "cpu", "fp32"
    return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def plan_finetune(base, data: TrainingText | str | Path, settings: FineTuneSettings, name: str, models_root: Path | str,
                  resuming: bool = False, processes: int = 1, test_data: TrainingText | str | Path | None = None) -> FineTunePlan:
    """Check the name, the settings, the base model and the data, and tokenize; raises PlaygroundError before any training.
    A name whose last run can be resumed is refused (its checkpoints would be lost) unless `resuming` it. `processes`:
    how many train together (data parallel), each on batch_size blocks a batch, so a step takes that many times more.
    `test_data`: a test text of the user's (instead of a test split; refused together with test_fraction)."""
    out_dir = check_model_name(name, Path(models_root))
    if not resuming and (step := JobFolder.of(models_root, out_dir.name).latest_step()) is not None:
        raise PlaygroundError(key="finetune.resumable_exists", field="name", name=out_dir.name, step=step,
                              folder=f"{Path(models_root).name}/{JOBS_FOLDER}/{out_dir.name}")
    settings = settings.validate()
    config = check_base(base)
    settings.validate_for_model(config.n_positions)
    if settings.learning_rate is None:  # the default for this model's size, so the summary and report show what is used
        settings = replace(settings, learning_rate=default_learning_rate(settings.method, gpt2_parameters(config)))
    text = as_training_text(data)
    test_text = as_training_text(test_data) if test_data is not None else None
    if test_text is not None and settings.test_fraction > 0:
        raise SettingsError(key="finetune.test_both", field="test_fraction", fraction=settings.test_fraction)
    prepared = prepare_data(text, base.codec, settings.block_size, settings.val_fraction, settings.seed, settings.test_fraction,
                            test_text)
    device, precision = choose_device(settings.device)
    blocks_per_step = settings.batch_size * settings.gradient_accumulation * processes
    total_steps = settings.max_steps or max(1, math.ceil(settings.epochs * len(prepared.train_blocks) / blocks_per_step))
    eval_every = settings.eval_every or max(1, total_steps // EVALUATIONS_PER_RUN)
    return FineTunePlan(base, settings, out_dir.name, out_dir, prepared, total_steps, eval_every, device, precision,
                        list(prepared.notices), text, processes=processes, test_text=test_text)


def plan_resume(models_root: Path | str, name: str, owner: str | None = None, processes: int = 1) -> FineTunePlan:
    """The plan of a stopped job that goes on from its newest readable checkpoint: the same base model, settings and texts
    (read from its folder), every check made again. Refused with the reason when the job is not there (or is another
    user's: `owner`), when no checkpoint reads, or when the base model, settings or data no longer match the checkpoint."""
    job = JobFolder.of(models_root, name)
    description = job.description() if isinstance(name, str) and name and "/" not in name and not name.startswith(".") else None
    if description is None or (owner is not None and description.get("owner", "") != owner):
        raise PlaygroundError(key="finetune.no_checkpoint", field="name", name=str(name)[:100])
    checkpoint, notices = job.load()
    base = resolve_model(description["base_model"]["requested"])
    settings = FineTuneSettings.from_user(**description["settings"])
    plan = plan_finetune(base, job.text(), settings, name, models_root, resuming=True, processes=processes, test_data=job.test_text())
    saved, now = checkpoint.get("identity", {}), plan.identity()
    for key, what in (("base_sha256", "base model"), ("settings", "settings"), ("data_sha256", "data"), ("test_sha256", "test data"),
                      ("total_steps", "steps"),
                      ("processes", "processes")):
        if saved.get(key) != now[key]:
            raise PlaygroundError(key="finetune.checkpoint_mismatch", field="name", name=name, what=what,
                                  saved=_short(saved.get(key)), now=_short(now[key]))
    plan.resume, plan.owner = checkpoint, description.get("owner", "")
    plan.notices += notices
    return plan


def _short(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())[:300]
    return str(value)[:80]


# --- training -----------------------------------------------------------------------------------


class BatchOrder:
    """`next_batch` for the engine: blocks in a fresh seeded order every epoch, `batch_size` at a time, epochs running on;
    its position (`state`) goes into a checkpoint, so a resumed run draws the batches an unstopped one would. Of
    `processes` training together, each draws the same global batch of processes x batch_size blocks and takes its own
    share (`rank`), so they train on what one process with that batch would."""

    def __init__(self, blocks, batch_size: int, seed: int, processes: int = 1, rank: int = 0):
        import torch

        self.blocks, self.batch_size, self.processes, self.rank = blocks, batch_size, processes, rank
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []  # the rest of the current epoch's order

    def __call__(self):
        import torch

        size = self.batch_size * self.processes
        while len(self.order) < size:
            self.order.extend(torch.randperm(len(self.blocks), generator=self.generator).tolist())
        chosen = self.order[self.rank * self.batch_size: (self.rank + 1) * self.batch_size]
        del self.order[:size]
        return self.blocks[chosen]  # (B, T + 1)

    def state(self) -> dict:
        return {"generator": self.generator.get_state(), "order": list(self.order)}

    def load_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = list(state["order"])


def _add_lora(model, settings: FineTuneSettings):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=list(settings.lora_target_modules), bias="none", task_type="CAUSAL_LM",
                        fan_in_fan_out=True)  # GPT-2's Conv1D stores its weight as (in, out)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        kinds = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ in ("Conv1D", "Linear")})
        raise SettingsError(key="finetune.targets_model", field="lora_target_modules",
                            value=repr(list(settings.lora_target_modules)), error=first_line(exc), layers=", ".join(kinds)) from None


def _machine(device: str, precision: str, threads: int) -> dict:
    from importlib.metadata import version

    machine = machine_description()
    machine["versions"] = {name: version(name) for name in ("torch", "transformers", "peft")}
    machine.update(device=device, precision=precision, torch_threads=threads)
    return machine


def execute_plan(plan: FineTunePlan, progress: Progress | None = None, cancel=None, show_bar: bool = False,
                 threads: int | None = None, accelerator=None) -> dict:
    """Train as planned and write `plan.out_dir` atomically; returns the training report (also in training_report.json).

    `progress(dict)` is called at each phase change and after every step with: phase (loading, evaluating,
    training, saving, complete), step, total_steps, epoch, train_loss, val_loss (the latest), learning_rate,
    tokens_per_s, elapsed_s, eta_s, train_losses and val_losses ([step, loss] pairs so far),
    val_perplexity_before (None until measured), checkpoint_step (the newest checkpoint's, or None). `cancel` (a
    threading.Event) stops the run within a step: TrainingCancelled is raised and no model is written; so is any
    other failure.

    The run keeps a folder of its own (checkpoints.JobFolder): its texts and settings, a checkpoint every
    `plan.checkpoint_every` steps and at a cancel, and TensorBoard event files (loss, learning rate, validation and
    test perplexity). A run that stopped for any reason goes on from its newest checkpoint (`plan_resume`), and on
    the CPU its steps are those of a run that never stopped. Once the model is saved, the event files move into it
    (`NAME/tensorboard`) and the job's folder goes.

    With an `accelerator` of `plan.processes` processes (training.engine.data_parallel: `accelerate launch` or
    `torchrun`), every process trains on its share of each batch and the first one alone writes: the job's folder,
    checkpoints, event files and the model.

    The model saved is the best one seen: the trained weights at the evaluation with the lowest validation loss
    (step 0, the base, included). When that was not the last evaluation, validation loss rose after it (the model
    began to learn the training text by heart): the report's `kept_best` says from which step the saved weights are
    and what the last step scored, so the user learns that fewer steps or a lower rate would do.
    """
    import torch

    settings, data, resume = plan.settings, plan.data, plan.resume
    started = time.perf_counter()
    state: dict[str, Any] = {"phase": "loading", "step": 0, "total_steps": plan.total_steps, "epoch": 0.0, "train_loss": None,
                             "val_loss": None, "learning_rate": 0.0, "tokens_per_s": 0.0, "elapsed_s": 0.0, "eta_s": None,
                             "train_losses": [], "val_losses": [], "val_perplexity_before": None, "checkpoint_step": None}
    if resume is not None:
        state.update(resume["progress"], step=resume["step"], checkpoint_step=resume["step"],
                     train_losses=[list(p) for p in resume["curve"]["train"]], val_losses=[list(p) for p in resume["curve"]["val"]])

    def report_progress(**changes) -> None:
        state.update(changes, elapsed_s=round(time.perf_counter() - started, 2))
        if progress is not None:
            progress({**state, "train_losses": list(state["train_losses"]), "val_losses": list(state["val_losses"])})

    report_progress()
    identity = plan.identity()
    job = JobFolder.of(plan.out_dir.parent, plan.name)
    main = accelerator is None or accelerator.is_main_process  # the process that writes
    if plan.processes != (accelerator.num_processes if accelerator is not None else 1):
        raise ValueError(f"the plan is for {plan.processes} processes, not {accelerator.num_processes if accelerator else 1}")
    if resume is None and main:
        job.create({"name": plan.name, "base_model": {"name": plan.base.name, "requested": plan.base.requested},
                    "settings": settings.to_dict(), "owner": plan.owner, "total_steps": plan.total_steps, "data": data.stats,
                    "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}, plan.text, plan.test_text)
    from torch.utils.tensorboard import SummaryWriter

    # A resumed run drops what the stopped one logged after its checkpoint (those steps are done again).
    board = SummaryWriter(str(job.tensorboard_dir), purge_step=resume["step"] + 1 if resume else None) if main else _NoBoard()
    try:
        with staged_folder(plan.out_dir, replace=False) if main else nullcontext(None) as staged:
            torch.manual_seed(settings.seed)
            model = load_torch_model(plan.base).to(accelerator.device if accelerator is not None else plan.device)
            parameters = sum(p.numel() for p in model.parameters())
            validate = lambda: blocks_loss(model, data.val_blocks, settings.batch_size, plan.precision)  # noqa: E731
            test = (lambda: blocks_loss(model, data.test_blocks, settings.batch_size, plan.precision)) if data.test_blocks is not None else None
            if resume is None:
                report_progress(phase="evaluating")
                val_loss_before = validate()
                test_loss_before = test() if test else None
                board.add_scalar("validation/loss", val_loss_before, 0)
                board.add_scalar("validation/perplexity", math.exp(val_loss_before), 0)
            else:  # measured before the stopped run's first step, on the same weights
                val_loss_before, test_loss_before = resume["val_loss_before"], resume["test_loss_before"]
            report_progress(phase="training", val_loss=state["val_loss"] if resume else val_loss_before,
                            val_losses=state["val_losses"] or [[0, round(val_loss_before, 5)]],
                            val_perplexity_before=math.exp(val_loss_before))
            if settings.method == "lora":
                model = _add_lora(model, settings)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            batches = BatchOrder(data.train_blocks, settings.batch_size, settings.seed, plan.processes,
                                 accelerator.process_index if accelerator is not None else 0)
            if resume is None:
                # The best weights so far (those being trained: LoRA's adapters, or every weight), kept on the CPU.
                best = {"step": 0, "val_loss": val_loss_before, "weights": _trained_weights(model)}
                # Early stopping: evaluations in a row that did not beat the best by more than the minimum change.
                stalled = {"evaluations": 0, "reference": val_loss_before}
            else:
                _restore_weights(model, resume["weights"])
                best, stalled = resume["best"], resume["stalled"]
                batches.load_state(resume["batches"])
            schedule = Schedule(steps=plan.total_steps, learning_rate=settings.effective_learning_rate,
                                warmup_steps=min(settings.warmup_steps, plan.total_steps), weight_decay=settings.weight_decay,
                                clip_norm=settings.max_grad_norm or math.inf)  # clipping at inf multiplies by 1: off
            train_blocks = len(data.train_blocks)
            blocks_per_step = settings.batch_size * settings.gradient_accumulation * plan.processes

            def on_step(info: dict) -> None:
                state["train_losses"].append([info["step"], round(info["train_loss"], 5)])
                board.add_scalar("train/loss", info["train_loss"], info["step"])
                board.add_scalar("train/learning_rate", info["learning_rate"], info["step"])
                if info["val_loss"] is not None:
                    state["val_losses"].append([info["step"], round(info["val_loss"], 5)])
                    board.add_scalar("validation/loss", info["val_loss"], info["step"])
                    board.add_scalar("validation/perplexity", math.exp(info["val_loss"]), info["step"])
                    if info["val_loss"] < best["val_loss"]:
                        best.update(step=info["step"], val_loss=info["val_loss"], weights=_trained_weights(model))
                    if info["val_loss"] < stalled["reference"] - settings.early_stopping_min_delta:
                        stalled.update(evaluations=0, reference=info["val_loss"])
                    else:
                        stalled["evaluations"] += 1
                report_progress(step=info["step"], train_loss=info["train_loss"], learning_rate=info["learning_rate"],
                                tokens_per_s=round(info["tokens_per_s"], 1), eta_s=round(info["eta_s"], 1),
                                epoch=round(info["step"] * blocks_per_step / train_blocks, 3),
                                **({"val_loss": info["val_loss"]} if info["val_loss"] is not None else {}))

            def save_checkpoint(engine: dict) -> None:
                """Everything a resume needs after step engine["step"]: the loop's state and this run's own."""
                if not main:
                    return
                job.save({"identity": identity, "step": engine["step"], "engine": engine, "weights": _trained_weights(model),
                          "best": best, "stalled": stalled, "batches": batches.state(),
                          "curve": {"train": state["train_losses"], "val": state["val_losses"]},
                          "val_loss_before": val_loss_before, "test_loss_before": test_loss_before,
                          "progress": {k: state[k] for k in ("epoch", "train_loss", "val_loss", "learning_rate", "tokens_per_s",
                                                              "val_perplexity_before")}})
                board.flush()
                report_progress(checkpoint_step=engine["step"])

            train_started = time.perf_counter()
            threads = threads or max(1, training_threads() // plan.processes)  # the processes share the cores
            train_causal_lm(model, batches, schedule, desc=f"Fine-tuning {plan.name}", progress=show_bar,
                            accumulation_steps=settings.gradient_accumulation, evaluate=validate, eval_every=plan.eval_every,
                            on_step=on_step, cancel=cancel, precision=plan.precision, threads=threads,
                            stop_early=lambda: 0 < settings.early_stopping_patience <= stalled["evaluations"],
                            checkpoint=save_checkpoint, checkpoint_every=plan.checkpoint_every,
                            resume=resume["engine"] if resume else None, accelerator=accelerator)
            train_seconds = time.perf_counter() - train_started + (resume["engine"]["train_s"] if resume else 0.0)
            steps_done = state["step"]
            stopped_early = None
            if steps_done < plan.total_steps:  # not cancelled (that raised): stopped early
                stopped_early = {"step": steps_done, "total": plan.total_steps, "patience": settings.early_stopping_patience,
                                 "min_delta": settings.early_stopping_min_delta}
            if cancel is not None and cancel.is_set():  # set during the last step: still no model is saved
                raise TrainingCancelled(key="train.cancelled")
            report_progress(phase="saving")
            last_step, last_val_loss = state["val_losses"][-1] if state["val_losses"] else (0, val_loss_before)
            kept_best = None
            if best["step"] != last_step:  # validation loss rose after the best evaluation: save that one
                _restore_weights(model, best["weights"])
                kept_best = {"step": best["step"], "val_perplexity": round(math.exp(best["val_loss"]), 3),
                             "last_step": last_step, "last_val_perplexity": round(math.exp(last_val_loss), 3),
                             "overfit": math.exp(last_val_loss - best["val_loss"]) - 1 >= OVERFIT_RISE}
            best = None  # the copy is no longer needed
            if settings.method == "lora":
                model = model.merge_and_unload()  # W + (alpha / r) * B @ A in every adapted layer: a plain GPT-2 again
            val_loss_after = validate()  # on the merged weights: what the saved model scores
            test_loss_after = test() if test else None  # the held-out test: text that chose nothing
            if test:
                board.add_scalar("test/perplexity", math.exp(test_loss_before), 0)
                board.add_scalar("test/perplexity", math.exp(test_loss_after), steps_done)
            board.add_scalar("validation/perplexity_saved", math.exp(val_loss_after), steps_done)
            model = model.to("cpu").eval()
            if main:
                model.save_pretrained(staged, safe_serialization=True)
                plan.base.tokenizer.save_pretrained(staged)
            report = {
                "name": plan.name,
                "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "base_model": {"name": plan.base.name, "requested": plan.base.requested, "sha256": identity["base_sha256"]},
                "method": settings.method,
                "settings": settings.to_dict(),
                "data": data.stats,
                "notices": [str(n) for n in plan.notices],
                "steps": steps_done,
                "planned_steps": plan.total_steps,
                "resumed_from": resume["step"] if resume else None,
                "stopped_early": stopped_early,
                "epochs": round(steps_done * blocks_per_step / train_blocks, 3),
                "processes": plan.processes,
                "parameters": parameters,
                "trainable_parameters": trainable,
                "val_loss_before": round(val_loss_before, 5),
                "val_loss_after": round(val_loss_after, 5),
                "val_perplexity_before": round(math.exp(val_loss_before), 3),
                "val_perplexity_after": round(math.exp(val_loss_after), 3),
                "val_perplexity_change": round(math.exp(val_loss_after - val_loss_before) - 1, 4),
                "kept_best": kept_best,
                "test": None if test is None else {
                    "blocks": len(data.test_blocks), "source": data.stats.get("test_source"),
                    "perplexity_before": round(math.exp(test_loss_before), 3),
                    "perplexity_after": round(math.exp(test_loss_after), 3),
                    "change": round(math.exp(test_loss_after - test_loss_before) - 1, 4)},
                "loss_curve": {"train": state["train_losses"], "val": state["val_losses"]},
                "tensorboard": str(plan.out_dir / "tensorboard"),
                "command": plan.command(),  # the event files, moved there from the job's folder
                "tokens_per_s": state["tokens_per_s"],
                "train_seconds": round(train_seconds, 1),
                "total_seconds": round(time.perf_counter() - started, 1),
                "machine": _machine(plan.device, plan.precision, threads),
            }
            if main:
                (staged / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
                board.close()
                if job.tensorboard_dir.is_dir():
                    shutil.copytree(job.tensorboard_dir, staged / "tensorboard")
    except BaseException:
        if main and job.latest_step() is None:  # stopped before its first checkpoint: nothing to resume, nothing kept
            job.remove()
        raise
    finally:
        board.close()
    if main:
        job.remove()  # the model is saved: nothing is left to resume
    report_progress(phase="complete", val_loss=val_loss_after, checkpoint_step=None)
    return report


class _NoBoard:
    """The event writer of a process that does not write (data parallel: the first process writes)."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


OVERFIT_RISE = 0.05  # validation perplexity this much above its best by the end: the run overfitted, and is told so


def test_text(test: dict, lang: str) -> str:
    """The report's test split, in `lang`."""
    from ..locales import text

    if test.get("source"):
        return text("finetune.test_file_result", lang, name=test["source"], blocks=test["blocks"], before=test["perplexity_before"],
                    after=test["perplexity_after"], change=f"{test['change']:+.1%}")
    return text("finetune.test_result", lang, blocks=test["blocks"], before=test["perplexity_before"],
                after=test["perplexity_after"], change=f"{test['change']:+.1%}")


def stopped_early_text(stopped: dict, lang: str) -> str:
    """What the report's `stopped_early` means, in `lang`."""
    from ..locales import text

    return text("finetune.stopped_early", lang, **stopped)


def kept_best_text(kept_best: dict, lang: str) -> str:
    """What the report's `kept_best` means, in `lang`: validation loss rose after the step whose weights were saved."""
    from ..locales import text

    if kept_best["step"] == 0:
        key = "finetune.kept_base"
    else:
        key = "finetune.overfit" if kept_best.get("overfit") else "finetune.kept_best"
    return text(key, lang, **{k: v for k, v in kept_best.items() if k != "overfit"})


def _trained_weights(model) -> dict:
    """A CPU copy of the weights being trained (LoRA's adapters, or all of them), to come back to."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def _restore_weights(model, weights: dict) -> None:
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in weights:
                p.copy_(weights[name].to(p.device))


def run_finetune(base, data: TrainingText | str | Path, settings: FineTuneSettings, name: str, models_root: Path | str,
                 progress: Progress | None = None, cancel=None, show_bar: bool = False, threads: int | None = None,
                 test_data: TrainingText | str | Path | None = None) -> dict:
    """Plan (every check) and execute a fine-tune; returns the report. `data` (and `test_data`, a test file of the user's):
    a TrainingText, a Path to a file, or pasted text."""
    return execute_plan(plan_finetune(base, data, settings, name, models_root, test_data=test_data), progress, cancel, show_bar,
                        threads)
