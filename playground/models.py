"""Resolve `--model` (hub id, local folder, or `demo`) to files on disk, with an offline fallback to the demo model."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

from .training.demo import ensure_demo_model
from .errors import ModelLoadError
from .paths import demo_model_dir

DEMO = "demo"
HUB_PROBE_TIMEOUT_S = 3.0
RANDOM_PREFIX = "random:"
RANDOM_NOTICE = "Randomly initialised weights: for speed measurements only; its text and quality numbers mean nothing."
# "name" or "owner/name", as the hub spells repository ids; nothing path-like.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
# Real GPT-2 family shapes (transformers' GPT2Config with these overrides), for speed-only measurements.
RANDOM_ARCHITECTURES = {
    "gpt2": {},
    "distilgpt2": {"n_layer": 6},
    "gpt2-medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16},
}


@dataclass
class ModelSource:
    """A model the backends can load: `location` is a local folder, or a hub id resolved from the local cache."""

    name: str  # what the UI shows: "gpt2", "demo-gpt2", or the folder's name
    location: str  # folder path or hub id
    requested: str  # what the user asked for
    notice: str | None = None  # set when we fell back to something else
    _tokenizer: object | None = field(default=None, repr=False)

    @property
    def tokenizer(self):
        """The model's tokenizer, loaded once (fast tokenizer, no remote code)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.location, trust_remote_code=False)
        return self._tokenizer

    @cached_property
    def token_texts(self) -> list[str]:
        """Every vocabulary entry decoded on its own: a table lookup in the decoding loop beats a decode per alternative.

        Models whose embedding is larger than the tokenizer (padded vocabularies, random models) get a
        placeholder for the ids no text maps to.
        """
        from transformers import AutoConfig

        tok = self.tokenizer
        texts = tok.batch_decode([[i] for i in range(len(tok))])
        vocab_size = AutoConfig.from_pretrained(self.location).vocab_size
        return texts + [f"<id {i}>" for i in range(len(texts), vocab_size)]


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """A quick TCP probe of the hub: transformers itself retries for about a minute before it gives up offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _is_local_spec(spec: str) -> bool:
    # Hub ids are "name" or "owner/name"; anything path-like, or an existing folder, is local.
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or Path(spec).expanduser().is_dir()


def _check_local_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelLoadError(f"Model folder {folder} does not exist. Pass a folder in Hugging Face format, a hub id, or 'demo'.")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} has no config.json: it is not a model folder in Hugging Face format (save_pretrained output).")
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(
            f"{folder} has no .safetensors weights. The playground loads safetensors only (pickled .bin files can run code); "
            "convert with `model.save_pretrained(folder, safe_serialization=True)`."
        )


def _cached_on_disk(hub_id: str) -> bool:
    """True when the hub id's config and safetensors weights are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(hub_id, "config.json")
    weights = try_to_load_from_cache(hub_id, "model.safetensors")
    return isinstance(config, str) and isinstance(weights, str)


def resolve_model(spec: str | None = None, demo_dir: Path | None = None) -> ModelSource:
    """Turn what the user typed into a loadable ModelSource.

    - `demo`: the offline demo GPT-2, built on first use.
    - a local folder: used as is (must be Hugging Face format with safetensors).
    - anything else is a hub id (`gpt2`, `distilgpt2`, `openai-community/gpt2-medium`): taken from
      the local cache when there, else downloaded; when the hub is unreachable we say so in one line
      and fall back to the demo model.
    """
    spec = (spec or "gpt2").strip()
    demo_dir = Path(demo_dir or demo_model_dir())
    if spec == DEMO:
        return ModelSource(name=demo_dir.name, location=str(ensure_demo_model(demo_dir)), requested=spec)
    if spec.startswith(RANDOM_PREFIX):
        folder = build_random_model(spec[len(RANDOM_PREFIX):], demo_dir)
        return ModelSource(name=folder.name, location=str(folder), requested=spec, notice=RANDOM_NOTICE)
    if _is_local_spec(spec):
        folder = Path(spec).expanduser().resolve()
        _check_local_folder(folder)
        return ModelSource(name=folder.name, location=str(folder), requested=spec)
    if _cached_on_disk(spec):
        return ModelSource(name=spec, location=spec, requested=spec)
    if not hub_reachable():
        notice = f"The model hub is unreachable and '{spec}' is not cached: using the offline demo model ({demo_dir.name}) instead."
        print(notice, flush=True)
        return ModelSource(name=demo_dir.name, location=str(ensure_demo_model(demo_dir)), requested=spec, notice=notice)
    return ModelSource(name=spec, location=spec, requested=spec)


def list_local_models(models_root: Path) -> list[str]:
    """The model folders (config.json and safetensors weights) directly inside `models_root`, by name."""
    if not models_root.is_dir():
        return []
    return sorted(
        entry.name for entry in models_root.iterdir()
        if not entry.name.startswith(".") and entry.is_dir() and (entry / "config.json").is_file() and any(entry.glob("*.safetensors"))
    )


def resolve_choice(choice: object, models_root: Path) -> ModelSource:
    """A model picked in the UI or the API, where strangers may be typing: only a folder listed in
    `models_root` (by name) or a hub id. Never an arbitrary path, and no silent fallback to the demo model."""
    if not isinstance(choice, str):
        raise ModelLoadError(f"The model must be a name; got {type(choice).__name__}, which cannot be chosen here.")
    choice = choice.strip()
    if choice in list_local_models(models_root):
        folder = models_root / choice
        notice = RANDOM_NOTICE if choice.startswith("random-") else None
        return ModelSource(name=choice, location=str(folder), requested=choice, notice=notice)
    # A hub id that is also a folder here would be loaded from that folder by transformers: refuse it.
    if not HUB_ID.match(choice) or ".." in choice or Path(choice).exists():
        raise ModelLoadError(
            f"{choice[:200]!r} cannot be chosen here: pick a model from the list (the folders in {models_root.name}/) or "
            "type a hub id such as gpt2 or openai-community/gpt2-medium. Other folders open with --model PATH at start-up."
        )
    if _cached_on_disk(choice):
        return ModelSource(name=choice, location=choice, requested=choice)
    if not hub_reachable():
        raise ModelLoadError(f"The model hub is unreachable and '{choice}' is not in the local cache: pick a model from the list.")
    from transformers import AutoConfig

    try:  # the config is small: check the architecture before any weights are downloaded
        model_type = AutoConfig.from_pretrained(choice, trust_remote_code=False).model_type
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load model '{choice}': {exc}".splitlines()[0]) from exc
    if model_type != "gpt2":
        raise ModelLoadError(f"'{choice}' is a {model_type} model; the playground runs GPT-2 family models only.")
    return ModelSource(name=choice, location=choice, requested=choice)


def build_random_model(arch: str, demo_dir: Path, seed: int = 0) -> Path:
    """A GPT-2 family architecture with seeded random weights and the demo tokenizer, cached in models/random-ARCH/."""
    if arch not in RANDOM_ARCHITECTURES:
        raise ModelLoadError(f"Unknown random architecture {arch!r}; use one of: {', '.join(RANDOM_PREFIX + a for a in RANDOM_ARCHITECTURES)}.")
    folder = demo_dir.parent / f"random-{arch}"
    if (folder / "model.safetensors").is_file():
        return folder
    import shutil
    import tempfile

    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(ensure_demo_model(demo_dir))
    torch.manual_seed(seed)
    config = GPT2Config(**RANDOM_ARCHITECTURES[arch], bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config)  # vocab 50257, context 1024, like the real one
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        staged = Path(tmp) / folder.name
        model.save_pretrained(staged, safe_serialization=True)
        tokenizer.save_pretrained(staged)
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)
    return folder


def load_torch_model(source: ModelSource, dtype=None):
    """Load weights with safetensors only and without remote code; wrap hub errors into a ModelLoadError."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.location, use_safetensors=True, trust_remote_code=False, dtype=dtype, attn_implementation="eager"
        )
    except OSError as exc:
        raise ModelLoadError(f"Could not load model '{source.requested}': {exc}".splitlines()[0]) from exc
    if model.config.model_type not in {"gpt2"}:
        raise ModelLoadError(f"'{source.requested}' is a {model.config.model_type} model; the playground runs GPT-2 family models only.")
    return model.eval()
