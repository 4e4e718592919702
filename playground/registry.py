"""The models a playground may run and their backends: chosen by name, built once, shared, forgotten when unused."""

from __future__ import annotations

import threading
from pathlib import Path

from .backends.base import Backend, Engine
from .errors import PlaygroundError
from .models import ModelSource, list_local_models, resolve_choice, source_files, source_fingerprint
from .onnx.export import VARIANTS
from .paths import models_dir

BACKENDS = ("torch", "onnx", "remote")  # remote: an OpenAI-compatible engine (--remote-url)
MAX_LOADED_MODELS = 3  # models with built backends kept in memory; the least recently used other one goes first


class ModelRegistry:
    """The loaded models and their backends; safe to share between Gradio's worker threads.

    The model the app started with is the default. Others can be chosen per run, but only by name
    from the allow-listed models folder or as hub ids (see `resolve_choice`): a shared link must not
    open arbitrary folders of the server. Backends are built lazily, once per (model, backend,
    variant), under a lock; a forward pass keeps no state in the backend (the KV cache travels with
    each run), so runs on different threads may share one backend.
    """

    def __init__(self, source: ModelSource, device: str = "auto", default_backend: str = "torch",
                 default_variant: str = "fp32", exports_root: Path | None = None, models_root: Path | None = None,
                 remote_url: str | None = None, remote_model: str | None = None, remote_timeout_s: float | None = None):
        self.source = source  # the default model
        self.remote_url, self.remote_model, self.remote_timeout_s = remote_url, remote_model, remote_timeout_s
        self.models_root = Path(models_root) if models_root is not None else models_dir()
        self._sources: dict[str, ModelSource] = {source.name: source}
        self._model_use: list[str] = [source.name]  # least recently used first
        self.device = device
        self.default_backend = default_backend
        self.default_variant = default_variant
        self.exports_root = exports_root
        self._backends: dict[tuple[str, str, str | None], Backend | Engine] = {}
        self._build_locks: dict[tuple[str, str, str | None], threading.Lock] = {}
        self._backend_lock = threading.Lock()
        self._fingerprints: dict[tuple, str] = {}  # (file, size, mtime) of a model's files -> its content hash

    def model_choices(self) -> list[str]:
        """What the UI offers: the default model, then the folders of the models folder."""
        return [self.source.name] + [name for name in list_local_models(self.models_root) if name != self.source.name]

    def source_for(self, model: str | None = None) -> ModelSource:
        """The model named `model` (default: the app's), resolved once; only allow-listed folders and hub ids. The app's
        model also answers to the name it was started with (`--model demo-zh` is the folder demo-zh-gpt2), when that
        is a name: a path is refused here as any other path is."""
        if model is None or (isinstance(model, str) and not model.strip()):
            return self.source
        if isinstance(model, str):
            model = model.strip()
            if model == self.source.requested and not any(sep in model for sep in "/\\"):  # a name, never a path
                return self.source
        with self._backend_lock:
            if isinstance(model, str) and model in self._sources:
                return self._sources[model]
        source = resolve_choice(model, self.models_root)  # refuses anything but an allow-listed name or a hub id
        with self._backend_lock:
            return self._sources.setdefault(source.name, source)

    def context_length(self, model: str | None = None) -> int:
        """The model's context in tokens, from its config (no weights loaded)."""
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self.source_for(model).location).n_positions

    def backend(self, name: str | None = None, variant: str | None = None, model: str | None = None) -> Backend | Engine:
        """The shared backend for (model, name, variant), built on first use (an ONNX one exports first if
        needed); for "remote", the serving engine. `variant` is ignored for torch (its precision follows the device)."""
        name = name or self.default_backend
        if not isinstance(name, str) or name not in BACKENDS:
            raise PlaygroundError(key="backend.unknown", field="backend", name=name, available=", ".join(BACKENDS))
        # Checked for torch too, which ignores it: a typo such as "int2" must not pass unnoticed. (A remote run
        # records the engine's model name as its variant, which a branch passes back: the engine ignores it.)
        if variant not in (None, "") and (not isinstance(variant, str) or (variant not in VARIANTS and name != "remote")):
            raise PlaygroundError(key="variant.unknown", field="variant", name=variant, available=", ".join(VARIANTS))
        variant = None if name in ("torch", "remote") else (variant or self.default_variant)
        source = self.source_for(model)
        if name == "remote":
            self._check_remote(source)
        key = (source.name, name, variant)
        # One lock per backend: an export of minutes must not hold up runs on backends already built.
        with self._backend_lock:
            self._touch(source.name)
            if key in self._backends:
                return self._backends[key]
            build_lock = self._build_locks.setdefault(key, threading.Lock())
        with build_lock:
            with self._backend_lock:
                backend = self._backends.get(key)
            if backend is None:
                if name == "torch":
                    from .backends.torch import TorchBackend

                    backend = TorchBackend(source, self.device)
                elif name == "remote":
                    from .backends.remote import DEFAULT_TIMEOUT_S, RemoteEngine

                    backend = RemoteEngine(source, self.remote_url, self.remote_model,
                                            timeout_s=self.remote_timeout_s or DEFAULT_TIMEOUT_S)
                else:
                    from .backends.onnx import OnnxBackend

                    backend = OnnxBackend(source, variant, self.device, exports_root=self.exports_root)
                with self._backend_lock:
                    self._backends[key] = backend
                    self._forget_old_models(keep=source.name)
            return backend

    def analysis_backend(self, name: str | None = None, variant: str | None = None, model: str | None = None,
                         need: str = "attention") -> Backend:
        """The backend whose forward pass a view looks into (attention, the Inside view): `backend`'s, refused with
        a fix for a serving engine, which has none. `need` ("attention" or "logits") names what was asked for."""
        backend = self.backend(name, variant, model)
        if isinstance(backend, Engine):
            from .backends.remote import unavailable

            raise unavailable(need)
        return backend

    def backend_choices(self) -> list[str]:
        """The backends this app can run: the engine only when one was given (--remote-url)."""
        return [b for b in BACKENDS if b != "remote" or self.remote_url]

    def _check_remote(self, source: ModelSource) -> None:
        if not self.remote_url:
            raise PlaygroundError(key="remote.not_configured")
        if source.name != self.source.name:
            raise PlaygroundError(key="remote.one_model", model=self.source.name)

    def _touch(self, model: str) -> None:
        if model in self._model_use:
            self._model_use.remove(model)
        self._model_use.append(model)

    def _forget_old_models(self, keep: str) -> None:
        """Drop the backends of the least recently used models beyond MAX_LOADED_MODELS (never the default,
        nor `keep`). Runs still holding one finish normally: the backend lives until they let go of it."""
        loaded = [m for m in self._model_use if any(key[0] == m for key in self._backends)]
        for model in list(loaded):
            if len(loaded) <= MAX_LOADED_MODELS:
                break
            if model in (self.source.name, keep):
                continue
            for key in [key for key in self._backends if key[0] == model]:
                del self._backends[key]
                self._build_locks.pop(key, None)
            self._sources.pop(model, None)
            loaded.remove(model)

    def model_fingerprint(self, model: str | None = None) -> str | None:
        """Content hash of a model's config and weights (models.source_fingerprint), recomputed only when a
        file's size or modification time changed; None when its files cannot be read."""
        try:
            source = self.source_for(model)
            key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in source_files(source))
            if key not in self._fingerprints:
                self._fingerprints[key] = source_fingerprint(source)
            return self._fingerprints[key]
        except (OSError, PlaygroundError):
            return None

    @staticmethod
    def has_files(source: ModelSource) -> bool:
        """Whether a model's config and weights are still there (in its folder or the hub cache)."""
        try:
            return len(source_files(source)) >= 2  # config and weights, in the folder or the hub cache
        except (OSError, ValueError):  # a folder path that is gone is no valid hub id either
            return False
