"""The playground as the UI and API see it: models and backends created once and shared, per-session Stop."""

from __future__ import annotations

import sqlite3
import threading

import regex
from pathlib import Path
from typing import Iterator

from .backends.base import Backend
from .config import GenerationSettings
from .errors import Notice, PlaygroundError, SettingsError
from .generation import Generation, GenerationResult, TokenRecord, check_num_samples
from .history import HistoryStore
from .models import ModelSource, list_local_models, resolve_choice
from .onnx.export import VARIANTS
from .text import complete_prefix_length, escape_bytes, hex_bytes
from .training.jobs import FineTuneJobs
from .paths import models_dir

BACKENDS = ("torch", "onnx", "remote")  # remote: an OpenAI-compatible engine (--remote-url)
MAX_LOADED_MODELS = 3  # models with built backends kept in memory; the least recently used other one goes first


class Playground:
    """Holds the loaded models and their backends; safe to share between Gradio's worker threads.

    The model the app started with is the default. Others can be chosen per run, but only by name
    from the allow-listed models folder or as hub ids (see `resolve_choice`): a shared link must not
    open arbitrary folders of the server. Backends are built lazily, once per (model, backend,
    variant), under a lock; a forward pass keeps no state in the backend (the KV cache travels with
    each run), so runs on different threads may share one backend. Stop is keyed by the caller's
    session, so one user's Stop ends only their run.
    """

    def __init__(self, source: ModelSource, device: str = "auto", default_backend: str = "torch",
                 default_variant: str = "fp32", exports_root: Path | None = None,
                 history: HistoryStore | None = None, history_disabled: str | None = None,
                 models_root: Path | None = None, remote_url: str | None = None, remote_model: str | None = None,
                 remote_timeout_s: float | None = None):
        self.source = source  # the default model
        self.remote_url, self.remote_model, self.remote_timeout_s = remote_url, remote_model, remote_timeout_s
        self.models_root = Path(models_root) if models_root is not None else models_dir()
        self._sources: dict[str, ModelSource] = {source.name: source}
        self._model_use: list[str] = [source.name]  # least recently used first
        self.history = history
        self.history_disabled = history_disabled  # why there is no history, shown in the UI
        self.device = device
        self.default_backend = default_backend
        self.default_variant = default_variant
        self.exports_root = exports_root
        self._backends: dict[tuple[str, str, str | None], Backend] = {}
        self._build_locks: dict[tuple[str, str, str | None], threading.Lock] = {}
        self._backend_lock = threading.Lock()
        self._stop_events: dict[str, threading.Event] = {}
        self._stop_lock = threading.Lock()
        # One for the UI and the API alike: one training job at a time, followed from any browser.
        self.finetune_jobs = FineTuneJobs(self.models_root, self.history)
        self._fingerprints: dict[tuple, str] = {}  # (file, size, mtime) of a model's files -> its content hash
        self._insides: dict[tuple, object] = {}  # the last few runs opened in the Inside view (analysis.inside.Inside)
        self._inside_lock = threading.Lock()

    def model_choices(self) -> list[str]:
        """What the UI offers: the default model, then the folders of the models folder."""
        return [self.source.name] + [name for name in list_local_models(self.models_root) if name != self.source.name]

    def source_for(self, model: str | None = None) -> ModelSource:
        """The model named `model` (default: the app's), resolved once; only allow-listed folders and hub ids."""
        if model is None or (isinstance(model, str) and not model.strip()):
            return self.source
        if isinstance(model, str):
            model = model.strip()
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

    def backend(self, name: str | None = None, variant: str | None = None, model: str | None = None) -> Backend:
        """The shared backend for (model, name, variant), built on first use (an ONNX one exports first if
        needed). `variant` is ignored for torch (its precision follows the device)."""
        name = name or self.default_backend
        if not isinstance(name, str) or name not in BACKENDS:
            raise PlaygroundError(f"Unknown backend {name!r}; available: {', '.join(BACKENDS)}.")
        # Checked for torch too, which ignores it: a typo such as "int2" must not pass unnoticed. (A remote run
        # records the engine's model name as its variant, which a branch passes back: the engine ignores it.)
        if variant not in (None, "") and (not isinstance(variant, str) or (variant not in VARIANTS and name != "remote")):
            raise PlaygroundError(f"Unknown variant {variant!r}; available: {', '.join(VARIANTS)}.")
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
                    from .backends.remote import DEFAULT_TIMEOUT_S, RemoteBackend

                    backend = RemoteBackend(source, self.remote_url, self.remote_model,
                                            timeout_s=self.remote_timeout_s or DEFAULT_TIMEOUT_S)
                else:
                    from .backends.onnx import OnnxBackend

                    backend = OnnxBackend(source, variant, self.device, exports_root=self.exports_root)
                with self._backend_lock:
                    self._backends[key] = backend
                    self._forget_old_models(keep=source.name)
            return backend

    def backend_choices(self) -> list[str]:
        """The backends this app can run: the engine only when one was given (--remote-url)."""
        return [b for b in BACKENDS if b != "remote" or self.remote_url]

    def _check_remote(self, source: ModelSource) -> None:
        if not self.remote_url:
            raise PlaygroundError("No serving engine is configured: start the app with --backend remote --remote-url URL "
                                  "(an OpenAI-compatible server such as vLLM or llama.cpp's).", key="remote.not_configured")
        if source.name != self.source.name:
            raise PlaygroundError(f"The engine serves the app's model ({self.source.name}), whose tokenizer the playground "
                                  f"uses to read its tokens; choose {self.source.name} for the remote backend.",
                                  key="remote.one_model", model=self.source.name)

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

    def start(
        self,
        prompt: str,
        settings: GenerationSettings,
        session: str | None = None,
        backend: str | None = None,
        variant: str | None = None,
        model: str | None = None,
        prompt_ids: list[int] | None = None,
        num_samples: int = 1,
        group_id: str | None = None,
        stop_event: threading.Event | None = None,
    ) -> Generation:
        """Prepare a run of `num_samples` samples (validated, not started: iterate it, or `stream_samples` it).
        A new run of a session replaces its Stop event; `stop_event` (a sweep's, shared by its cells) is used
        as the run's own when given. `prompt_ids` (token ids of the model's tokenizer, as the API may send
        them) replace the prompt's text."""
        num_samples = check_num_samples(num_samples)  # before building a backend: a bad count costs nothing
        runner = self.backend(backend, variant, model)
        source = self.source_for(runner.info.model)
        if prompt_ids is not None:
            bad = [i for i in prompt_ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(source.codec)]
            if bad or not prompt_ids:
                raise SettingsError(f"Token id {bad[0] if bad else None!r} is not in this model's vocabulary (0 to "
                                    f"{len(source.codec) - 1}).", key="settings.token_id", value=bad[0] if bad else None,
                                    most=len(source.codec) - 1)
        return Generation(runner, source, prompt, settings, stop_event=self._stop_event_for(session, stop_event),
                          prompt_ids=prompt_ids, num_samples=num_samples, group_id=group_id)

    def _stop_event_for(self, session: str | None, stop_event: threading.Event | None = None) -> threading.Event:
        stop_event = stop_event or threading.Event()
        if session:
            with self._stop_lock:
                self._stop_events[session] = stop_event
        return stop_event

    def branch(self, parent: GenerationResult, token_index: int, alternative_id: int,
               session: str | None = None) -> Generation:
        """A new run that keeps `parent` up to its `token_index`-th generated token, replaces that token with
        `alternative_id`, and continues with the parent's settings, seed and backend.

        The run records its parent and the position it branched at; both are saved with it.
        """
        if not 0 <= token_index < len(parent.tokens):
            raise PlaygroundError(f"Token {token_index} is not in that run (it generated {len(parent.tokens)} tokens).")
        runner = self.backend(parent.info.backend, parent.info.variant, parent.info.model)
        source = self.source_for(parent.info.model)
        if not 0 <= alternative_id < len(source.codec):
            raise PlaygroundError(f"Token id {alternative_id} is not in this model's vocabulary.")
        ids = [t.token_id for t in parent.prompt_tokens] + [t.token_id for t in parent.tokens[:token_index]] + [alternative_id]
        run = Generation(runner, source, "", parent.settings,
                         stop_event=self._stop_event_for(session), prompt_ids=ids)
        run.result.parent_run_id = parent.run_id
        run.result.branch_position = parent.tokens[token_index].position
        # Inside a character of several tokens, say which bytes were kept and which replaced.
        position = parent.tokens[token_index].position
        for unit, records in parent.units():
            if unit.size > 1 and records[0].position <= position <= records[-1].position:
                k = position - records[0].position
                kept = b"".join(r.bytes for r in records[:k])
                alternative = hex_bytes(source.codec.piece(alternative_id, records[k - 1].token_id if k else None)) or "none"
                run.result.notices.append(Notice(
                    f"Branched at token {k + 1} of the {unit.size} that spell {unit.text!r}: kept its bytes before it "
                    f"({hex_bytes(kept) or 'none'}) and put the alternative's bytes ({alternative}) after them; the output "
                    "goes on from there and completes the character it starts.",
                    key="notice.branch_in_character", index=k + 1, size=unit.size, char=unit.text,
                    kept=hex_bytes(kept) or "—", alternative=alternative,
                ))
                break
        return run

    def completion_of(self, parent: GenerationResult, token_index: int, alternative_id: int, max_tokens: int = 4) -> str | None:
        """The character an alternative that is only part of one would most likely become: the kept bytes
        before it, its bytes, then the model's greedy next tokens until the character is whole (None if it
        does not finish within `max_tokens`)."""
        runner = self.backend(parent.info.backend, parent.info.variant, parent.info.model)
        codec = self.source_for(parent.info.model).codec
        ids = [t.token_id for t in parent.prompt_tokens] + [t.token_id for t in parent.tokens[:token_index]] + [alternative_id]
        ids = ids[-(runner.info.context_length - max_tokens):]
        data = b"".join(codec.pieces(ids))
        start = complete_prefix_length(b"".join(codec.pieces(ids[:-1])))  # where the character being spelled begins
        logits, cache = runner.prefill(ids)
        next_logits = logits[-1]
        for step in range(max_tokens + 1):
            if complete_prefix_length(data) == len(data):
                text = escape_bytes(data[start:])
                return regex.match(r"\X", text).group() if text else None
            if step == max_tokens:
                return None
            token_id = int(next_logits.argmax())
            data += codec.piece(token_id, ids[-1])
            ids.append(token_id)
            next_logits, cache = runner.step(token_id, cache)
        return None

    def stream(self, run: Generation, session: str | None = None) -> Iterator[TokenRecord]:
        """Iterate a run's records (of all its samples) and save it when it ends, as `stream_samples` does."""
        samples = self.stream_samples(run, session)
        try:
            for _, record in samples:
                yield record
        finally:
            samples.close()  # a consumer that stopped early: the run is saved as stopped now, not at garbage collection

    def stream_samples(self, run: Generation, session: str | None = None) -> Iterator[tuple[int, TokenRecord]]:
        """Iterate a run's (sample index, record) pairs and save every sample to the history when it ends:
        complete, stopped, abandoned or failed. Samples of a batch are saved as one group.

        A client that disconnects mid-stream closes this generator (GeneratorExit): the run is saved
        as stopped with what it had produced; samples that had already finished keep their own status.
        """
        status, error = "complete", None
        try:
            yield from run.samples()
            if any(r.finish_reason == "stopped" for r in run.results):
                status = "stopped"
        except GeneratorExit:
            status = "stopped"
            raise
        except Exception as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.finish(session, run)
            self._save(run, status, error)

    def model_fingerprint(self, model: str | None = None) -> str | None:
        """Content hash of a model's config and weights (onnx.export.source_fingerprint), recomputed only when a
        file's size or modification time changed; None when its files cannot be read."""
        from .onnx.export import source_files, source_fingerprint

        try:
            source = self.source_for(model)
            key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in source_files(source))
            if key not in self._fingerprints:
                self._fingerprints[key] = source_fingerprint(source)
            return self._fingerprints[key]
        except (OSError, PlaygroundError):
            return None

    @staticmethod
    def _has_files(source: ModelSource) -> bool:
        from .onnx.export import source_files

        try:
            return len(source_files(source)) >= 2  # config and weights, in the folder or the hub cache
        except (OSError, ValueError):  # a folder path that is gone is no valid hub id either
            return False

    def inside(self, result: GenerationResult):
        """The Inside view of a run (analysis.inside.Inside), built once per run and backend.

        The run's model must still be there with the same weights: a saved run's fingerprint is compared
        with the model's now.
        """
        from .analysis.inside import Inside, InsideError, check_fingerprint

        info = result.info
        key = (result.run_id, info.model, info.backend, info.variant,
               tuple(t.token_id for t in result.prompt_tokens + result.tokens))
        with self._inside_lock:
            if key in self._insides:
                return self._insides[key]
        notice = None
        if result.run_id is not None and self.history is not None:
            saved = self.history.get(result.run_id)
            stored = ((saved or {}).get("metrics") or {}).get("model_sha256") if saved else None
            try:
                source = self.source_for(info.model)
                if not self._has_files(source):
                    raise PlaygroundError(f"no config or weights at {source.location}")
            except PlaygroundError as exc:
                raise InsideError(f"The model '{info.model}' of this run is not available any more ({exc}). Put it back in the "
                                  "models folder, or open a run of an available model.", key="inside.model_gone",
                                  model=info.model) from None
            notice = check_fingerprint(stored, self.model_fingerprint(info.model), info.model)
        backend = self.backend(info.backend, info.variant, info.model)
        reference = backend if info.backend == "torch" else self.backend("torch", None, info.model)
        view = Inside(result, backend, reference.model, self.source_for(info.model).codec)
        if notice:
            view.notices.append(notice)
        with self._inside_lock:
            self._insides[key] = view
            while len(self._insides) > 2:  # each holds a run's residual stream (up to 38 MB for GPT-2 small)
                self._insides.pop(next(iter(self._insides)))
        return view

    def inside_of_run(self, run_id) -> object:
        """The Inside view of a saved run, by its id in the history."""
        from .analysis.inside import InsideError
        from .config import as_int
        from .generation import result_from_saved

        run_id = as_int("run_id", run_id)
        if self.history is None:
            raise InsideError(f"There is no history to open runs from: {self.history_disabled or 'it is disabled'}.",
                              key="inside.no_history", reason=self.history_disabled or "disabled")
        saved = self.history.get(run_id)
        if saved is None:
            raise InsideError(f"Run {run_id} is not in the history (deleted, or never saved): pick a run from the History tab.",
                              key="inside.no_run", run_id=run_id)
        codec = None
        if any("bytes" not in t for part in (saved.get("tokens") or {}).values() for t in part):
            codec = self.source_for(saved.get("model")).codec
        return self.inside(result_from_saved(saved, codec))

    def _save(self, run: Generation, status: str, error: str | None) -> None:
        if self.history is None:
            return
        # Stored with the metrics (no migration): the Inside view refuses a run whose model changed since.
        fingerprint = self.model_fingerprint(run.result.info.model)  # the samples of a batch share one model
        for result in run.results:
            # In a stopped batch, a sample that had already finished (end of text, stop sequence) is complete.
            finished = result.finish_reason in ("length", "eos", "stop_sequence")
            own_status = "complete" if status == "stopped" and finished else status
            try:
                data = result.to_dict()
                data["metrics"]["model_sha256"] = fingerprint
                result.run_id = self.history.save_run(data, own_status, error, result.parent_run_id, result.branch_position)
            except sqlite3.Error as exc:
                # Disk full, file removed, ...: the user still gets their output, and is told it was not saved.
                result.notices.append(Notice(f"This run was not saved to the history: {exc}.", key="notice.not_saved", error=str(exc)))

    def stop(self, session: str | None) -> bool:
        """Ask the session's running generation to end after its current token; False when none was running."""
        with self._stop_lock:
            event = self._stop_events.get(session or "")
        if event is None or event.is_set():
            return False
        event.set()
        return True

    def finish(self, session: str | None, run: Generation) -> None:
        """Forget the session's Stop event once its run is over (unless a newer run replaced it)."""
        with self._stop_lock:
            if session and self._stop_events.get(session) is run.stop_event:
                del self._stop_events[session]
