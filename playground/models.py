"""`--model` (hub id, local folder, `demo` or `demo-zh`) -> files on disk (offline: the demo model), their weights, their fingerprint."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

from .errors import ModelLoadError, Notice, first_line
from .paths import demo_model_dir, demo_zh_model_dir

DEMO = "demo"
DEMO_ZH = "demo-zh"
# Weight files we load, by preference. A pickled .bin is read only as plain tensors (see load_torch_model).
SAFETENSORS_WEIGHTS = "model.safetensors"
PICKLED_WEIGHTS = "pytorch_model.bin"
HUB_PROBE_TIMEOUT_S = 3.0
RANDOM_PREFIX = "random:"
RANDOM_NOTICE = Notice(key="notice.random_weights")
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
    def codec(self):
        """Each token's exact bytes and display label, and how sequences start and end (playground.text.TokenCodec)."""
        from transformers import AutoConfig

        from .text import TokenCodec

        return TokenCodec(self.tokenizer, AutoConfig.from_pretrained(self.location).vocab_size)


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


def _has_weights(folder: Path) -> bool:
    """Safetensors weights, or failing those a `pytorch_model.bin` (loaded as plain tensors only)."""
    return any(folder.glob("*.safetensors")) or (folder / PICKLED_WEIGHTS).is_file()


def _read_json(path: Path, name: str) -> dict:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(key="models.unreadable", model=name, file=path.name, error=first_line(exc)) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(key="models.not_object", model=name, file=path.name)
    return data


def _refuse_unsupported(config_file: Path, tokenizer_config_file: Path | None, name: str) -> None:
    """Refuse, before any weights are read, a model that needs its own code or is not a GPT-2."""
    files = {"config.json": _read_json(config_file, name)}
    if tokenizer_config_file is not None and tokenizer_config_file.is_file():
        files["tokenizer_config.json"] = _read_json(tokenizer_config_file, name)
    for file_name, data in files.items():
        if "auto_map" in data:
            raise ModelLoadError(key="models.remote_code", model=name, file=file_name)
    model_type = files["config.json"].get("model_type")
    if not model_type:
        raise ModelLoadError(key="models.no_type", model=name)
    if model_type != "gpt2":
        raise ModelLoadError(key="models.not_gpt2", model=name, model_type=model_type)


def _check_local_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ModelLoadError(key="models.no_folder", folder=str(folder))
    if not (folder / "config.json").is_file():
        raise ModelLoadError(key="models.no_config", folder=str(folder))
    if not _has_weights(folder):
        raise ModelLoadError(key="models.no_weights", folder=str(folder), safetensors=SAFETENSORS_WEIGHTS, pickled=PICKLED_WEIGHTS)
    _refuse_unsupported(folder / "config.json", folder / "tokenizer_config.json", str(folder))


def _cached_file(hub_id: str, file_name: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(hub_id, file_name)
    return Path(path) if isinstance(path, str) else None


def _cached_on_disk(hub_id: str) -> bool:
    """True when the hub id's config and weights (safetensors, or else pytorch_model.bin) are in the local Hugging Face cache.

    A cached model that needs its own code or is not a GPT-2 is refused here, before anything else is read.
    """
    config = _cached_file(hub_id, "config.json")
    if config is None or not (_cached_file(hub_id, SAFETENSORS_WEIGHTS) or _cached_file(hub_id, PICKLED_WEIGHTS)):
        return False
    _refuse_unsupported(config, _cached_file(hub_id, "tokenizer_config.json"), f"'{hub_id}'")
    return True


def resolve_model(spec: str | None = None, demo_dir: Path | None = None, demo_zh_dir: Path | None = None) -> ModelSource:
    """Turn what the user typed into a loadable ModelSource.

    - `demo`: the offline demo GPT-2 (English), built on first use; `demo-zh`: the Chinese one.
    - a local folder: used as is (Hugging Face format, safetensors or a pytorch_model.bin; GPT-2; no custom code).
    - anything else is a hub id (`gpt2`, `distilgpt2`, `uer/gpt2-chinese-cluecorpussmall`): taken from
      the local cache when there, else downloaded; when the hub is unreachable we say so in one line
      and fall back to the demo model.
    """
    # Imported here, not at the top: `python -m playground.training.demo` imports this module through the
    # package, and runpy warns when the module it is about to run is already imported.
    from .training.demo import ensure_demo_model, ensure_demo_zh_model

    spec = (spec or "gpt2").strip()
    demo_dir = Path(demo_dir or demo_model_dir())
    if spec == DEMO:
        return ModelSource(name=demo_dir.name, location=str(ensure_demo_model(demo_dir)), requested=spec)
    if spec == DEMO_ZH:
        demo_zh_dir = Path(demo_zh_dir or demo_zh_model_dir())
        return ModelSource(name=demo_zh_dir.name, location=str(ensure_demo_zh_model(demo_zh_dir)), requested=spec)
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
        notice = Notice(key="notice.hub_fallback", model=spec, demo=demo_dir.name)
        print(notice, flush=True)
        return ModelSource(name=demo_dir.name, location=str(ensure_demo_model(demo_dir)), requested=spec, notice=notice)
    _check_hub_config(spec)
    return ModelSource(name=spec, location=spec, requested=spec)


def list_local_models(models_root: Path) -> list[str]:
    """The model folders (config.json and safetensors or pytorch_model.bin weights) directly inside `models_root`, by name."""
    if not models_root.is_dir():
        return []
    return sorted(
        entry.name for entry in models_root.iterdir()
        if not entry.name.startswith(".") and entry.is_dir() and (entry / "config.json").is_file() and _has_weights(entry)
    )


def resolve_choice(choice: object, models_root: Path) -> ModelSource:
    """A model picked in the UI or the API, where strangers may be typing: only a folder listed in
    `models_root` (by name) or a hub id. Never an arbitrary path, and no silent fallback to the demo model."""
    if not isinstance(choice, str):
        raise ModelLoadError(key="models.not_a_name", field="model", type=type(choice).__name__)
    choice = choice.strip()
    if choice in list_local_models(models_root):
        folder = models_root / choice
        _check_local_folder(folder)
        notice = RANDOM_NOTICE if choice.startswith("random-") else None
        return ModelSource(name=choice, location=str(folder), requested=choice, notice=notice)
    # A hub id that is also a folder here would be loaded from that folder by transformers: refuse it.
    if not HUB_ID.match(choice) or ".." in choice or Path(choice).exists():
        raise ModelLoadError(key="models.not_choosable", field="model", model=choice[:200], folder=models_root.name)
    if _cached_on_disk(choice):
        return ModelSource(name=choice, location=choice, requested=choice)
    if not hub_reachable():
        raise ModelLoadError(key="models.hub_unreachable", field="model", model=choice)
    _check_hub_config(choice)
    return ModelSource(name=choice, location=choice, requested=choice)


def _check_hub_config(hub_id: str) -> None:
    """Download the small config.json first and refuse a model we would not run, before any weights are downloaded."""
    from huggingface_hub import hf_hub_download

    try:
        config = Path(hf_hub_download(hub_id, "config.json"))
    except (OSError, ValueError) as exc:  # huggingface_hub's HTTP errors are OSErrors; a malformed id is a ValueError
        raise ModelLoadError(key="models.load_failed", model=hub_id, error=first_line(exc)) from exc
    _refuse_unsupported(config, None, f"'{hub_id}'")


def _pickled_weights_error(source: ModelSource, exc: Exception) -> ModelLoadError:
    return ModelLoadError(key="models.pickled", model=source.requested, file=PICKLED_WEIGHTS, error=first_line(exc))


def build_random_model(arch: str, demo_dir: Path, seed: int = 0) -> Path:
    """A GPT-2 family architecture with seeded random weights and the demo tokenizer, cached in models/random-ARCH/."""
    if arch not in RANDOM_ARCHITECTURES:
        raise ModelLoadError(key="models.random_arch", name=arch, available=", ".join(RANDOM_PREFIX + a for a in RANDOM_ARCHITECTURES))
    folder = demo_dir.parent / f"random-{arch}"
    if (folder / "model.safetensors").is_file():
        return folder
    import shutil
    import tempfile

    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from .training.demo import ensure_demo_model

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


def _reads_pickled_weights(location: str) -> bool | None:
    """Whether loading will read a pytorch_model.bin (no safetensors here); None for a hub id whose weights are not
    cached yet, where transformers tries safetensors first and falls back to the .bin."""
    folder = Path(location)
    if folder.is_dir():
        return not any(folder.glob("*.safetensors"))
    if _cached_file(location, SAFETENSORS_WEIGHTS):
        return False
    return True if _cached_file(location, PICKLED_WEIGHTS) else None


def load_torch_model(source: ModelSource, dtype=None):
    """Load the weights (safetensors, else a pytorch_model.bin as plain tensors) without remote code; errors become ModelLoadError."""
    from transformers import AutoModelForCausalLM

    pickled = _reads_pickled_weights(source.location)
    # Without safetensors transformers reads pytorch_model.bin in modeling_utils.load_state_dict as
    # torch.load(file, map_location="cpu", weights_only=True) (checked in transformers 4.57.6: weights_only
    # defaults to True in from_pretrained, and check_torch_load_is_safe() demands torch >= 2.6; torch here is
    # 2.13). That unpickler rebuilds tensors and plain containers only, so a .bin carrying code or custom
    # classes fails to load instead of running. Online, transformers would also start a background thread
    # asking the hub to open a safetensors-conversion pull request on a .bin-only repository: not on our behalf.
    os.environ.setdefault("DISABLE_SAFETENSORS_CONVERSION", "true")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.location, use_safetensors=True if pickled is False else None, weights_only=True, trust_remote_code=False,
            dtype=dtype, attn_implementation="eager",
        )
    except OSError as exc:
        if not pickled:
            raise ModelLoadError(key="models.load_failed", model=source.requested, error=first_line(exc)) from exc
        raise _pickled_weights_error(source, exc) from exc
    except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        if not pickled:
            raise  # not a weights file we were handed: a bug, not the user's to fix
        # weights_only let the pickle through, but it is not a state dict of this model's tensors (a list, a tensor...).
        raise _pickled_weights_error(source, exc) from exc
    if model.config.model_type not in {"gpt2"}:
        raise ModelLoadError(key="models.not_gpt2", model=f"'{source.requested}'", model_type=model.config.model_type)
    return model.eval()


# --- identity of the source model ---------------------------------------------------------------


def source_files(source: ModelSource) -> list[Path]:
    """The config and the weight files the model loads from: safetensors, else its pytorch_model.bin."""
    folder = Path(source.location)
    if folder.is_dir():
        weights = sorted(folder.glob("*.safetensors")) or [folder / "pytorch_model.bin"]
        return sorted(p for p in [folder / "config.json", *weights] if p.is_file())
    from huggingface_hub import try_to_load_from_cache

    paths = [try_to_load_from_cache(source.location, name) for name in ("config.json", "model.safetensors")]
    if not isinstance(paths[1], str):
        paths[1] = try_to_load_from_cache(source.location, "pytorch_model.bin")
    return [Path(p) for p in paths if isinstance(p, str)]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_fingerprint(source: ModelSource) -> str:
    """Content hash of the source model's config and weights: an export of other weights is stale."""
    digest = hashlib.sha256()
    for path in source_files(source):
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()
