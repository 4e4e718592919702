"""The runs of the playground as the UI and API see them: started, branched, streamed, saved, stopped per session,
opened in the Inside view; on the shared models and backends of the registry."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing

import regex
from pathlib import Path
from typing import Iterator

from .batching import batch_for
from .config import GenerationSettings, check_prompt
from .errors import Notice, PlaygroundError, SettingsError
from .backends.base import Engine
from .experiments import ExperimentError, IntervenedBackend, Intervention, torch_backend_of
from .generation import Generation, check_num_samples
from .history import LOCAL_OWNER, HistoryStore
from .limits import Admission, UserLimits
from .machine import batch_rows as machine_batch_rows
from .models import ModelSource
from .records import GenerationResult, TokenRecord, result_from_saved, saved_row
from .registry import ModelRegistry
from .text import complete_prefix_length, escape_bytes, hex_bytes
from .finetune.jobs import FineTuneJobs


class Playground(ModelRegistry):
    """The playground as the UI and API see it: the model registry, and the runs on it (start, branch, stream
    and save, Stop, the Inside view).

    Stop is keyed by the caller's session, so one user's Stop ends only their run.
    """

    def __init__(self, source: ModelSource, device: str = "auto", default_backend: str = "torch",
                 default_variant: str = "fp32", exports_root: Path | None = None,
                 history: HistoryStore | None = None, history_disabled: str | None = None,
                 models_root: Path | None = None, remote_url: str | None = None, remote_model: str | None = None,
                 remote_timeout_s: float | None = None, admins: frozenset[str] | set[str] = frozenset(),
                 limits: UserLimits = UserLimits(), batch_rows: int | None = None):
        super().__init__(source, device=device, default_backend=default_backend, default_variant=default_variant,
                         exports_root=exports_root, models_root=models_root, remote_url=remote_url,
                         remote_model=remote_model, remote_timeout_s=remote_timeout_s)
        self.history = history
        self.history_disabled = history_disabled  # why there is no history, shown in the UI
        self.admins = frozenset(admins)  # logins that see and export everyone's runs (--admin: the teacher)
        self.admission = Admission(limits)  # each login's fair share: runs at once, new tokens per minute
        # Rows every local backend's decoding batch steps together (batching.py), and so how many runs the UI's queue
        # and /v1 let decode at once: a run beyond them waits its turn in the queue.
        self.batch_rows = batch_rows or machine_batch_rows()
        self.runs_at_once = self.batch_rows
        self._stop_events: dict[str, threading.Event] = {}
        self._stop_lock = threading.Lock()
        # One for the UI and the API alike: one training job at a time, followed from any browser.
        self.finetune_jobs = FineTuneJobs(self.models_root, self.history)
        self._insides: dict[tuple, object] = {}  # the last few runs opened in the Inside view (analysis.inside.Inside)
        self._inside_lock = threading.Lock()

    def viewer(self, username: str | None) -> str | None:
        """Whose rows the user logged in as `username` may see, for the history's `owner=`: their own, or None
        (everyone's) for an admin and for the single local user of an app without a login (`username` None)."""
        if not username or username in self.admins:
            return None
        return username

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
        owner: str = LOCAL_OWNER,
        intervention: Intervention | None = None,
        forced_ids: list[int] | None = None,
    ) -> Generation:
        """Prepare a run of `num_samples` samples (validated, not started: iterate it, or `stream_samples` it).
        A new run of a session replaces its Stop event; `stop_event` (a sweep's, shared by its cells) is used
        as the run's own when given. `prompt_ids` (token ids of the model's tokenizer, as the API may send
        them, or a branch's) replace the prompt's text.

        Every run starts here (the UI, /generate, /v1, sweeps, branches), so what a run may be is decided here
        once: N samples on any backend, drawn as one batch by a local backend and as N requests, one after
        another, by a serving engine (which decodes one sequence per request); either way one group. `owner`, the
        login of the user it is for, is saved with it (history.LOCAL_OWNER without a login). An `intervention` (the
        Experiments tab's) runs on a PyTorch backend of its own over the same weights (experiments.IntervenedBackend)
        and is saved with the run. `forced_ids`: the tokens its first steps take (one step at a time: steps.py)."""
        num_samples = check_num_samples(num_samples)  # before building a backend: a bad count costs nothing
        intervention = None if intervention is None or intervention.is_empty else intervention
        if intervention is not None and (backend or self.default_backend) != "torch":  # refused before an ONNX export
            raise ExperimentError(key="experiments.needs_torch", field="backend", backend=backend or self.default_backend)
        runner = self.backend(backend, variant, model)
        if intervention is not None:
            codec = self.source_for(runner.info.model).codec
            runner = IntervenedBackend(torch_backend_of(runner), intervention, codec,
                                       list(prompt_ids) if prompt_ids else codec.encode(check_prompt(prompt)) or [codec.start_id])
        if not isinstance(runner, Engine):  # an engine batches its requests itself
            batch_for(runner).max_rows = self.batch_rows
        source = self.source_for(runner.info.model)
        if prompt_ids is not None:
            bad = [i for i in prompt_ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(source.codec)]
            if bad or not prompt_ids:
                raise SettingsError(key="settings.token_id", field="prompt", value=bad[0] if bad else None,
                                    most=len(source.codec) - 1)
        run = Generation(runner, source, prompt, settings, stop_event=self._stop_event_for(session, stop_event),
                         prompt_ids=prompt_ids, num_samples=num_samples, group_id=group_id, owner=owner, forced_ids=forced_ids)
        if isinstance(runner, IntervenedBackend):
            for result in run.results:
                result.intervention = intervention.to_dict()
        # A logged-in user's fair share (limits.py): refused here, before anything runs; given back when it ends.
        self.admission.admit(owner, run.settings.max_new_tokens * run.num_samples, run)
        return run

    def _stop_event_for(self, session: str | None, stop_event: threading.Event | None = None) -> threading.Event:
        stop_event = stop_event or threading.Event()
        if session:
            with self._stop_lock:
                self._stop_events[session] = stop_event
        return stop_event

    def branch(self, parent: GenerationResult, token_index: int, alternative_id: int,
               session: str | None = None, owner: str = LOCAL_OWNER) -> Generation:
        """A new run that keeps `parent` up to its `token_index`-th generated token, replaces that token with
        `alternative_id`, and continues with the parent's settings, seed and backend.

        The run records its parent and the position it branched at; both are saved with it.
        """
        if not 0 <= token_index < len(parent.tokens):
            raise PlaygroundError(key="branch.no_token", index=token_index, count=len(parent.tokens))
        ids = [t.token_id for t in parent.prompt_tokens + parent.tokens[:token_index]] + [alternative_id]
        run = self.start("", parent.settings, session=session, backend=parent.info.backend, variant=parent.info.variant,
                         model=parent.info.model, prompt_ids=ids, owner=owner,
                         intervention=Intervention.from_dict(parent.intervention) if parent.intervention else None)
        run.result.parent_run_id = parent.run_id
        run.result.branch_position = parent.tokens[token_index].position
        # Inside a character of several tokens, say which bytes were kept and which replaced.
        position = parent.tokens[token_index].position
        for unit, records in parent.units():
            if unit.size > 1 and records[0].position <= position <= records[-1].position:
                k = position - records[0].position
                kept = b"".join(r.bytes for r in records[:k])
                alternative = hex_bytes(run.codec.piece(alternative_id, records[k - 1].token_id if k else None)) or "—"
                run.result.notices.append(Notice(key="notice.branch_in_character", index=k + 1, size=unit.size, char=unit.text,
                                                 kept=hex_bytes(kept) or "—", alternative=alternative))
                break
        return run

    def completion_of(self, parent: GenerationResult, token_index: int, alternative_id: int, max_tokens: int = 4) -> str | None:
        """The character an alternative that is only part of one would most likely become: the kept bytes
        before it, its bytes, then the model's greedy next tokens until the character is whole (None if it
        does not finish within `max_tokens`). A hint, not a run: nothing is saved."""
        ids = [t.token_id for t in parent.prompt_tokens + parent.tokens[:token_index]] + [alternative_id]
        codec = self.source_for(parent.info.model).codec
        data = b"".join(codec.pieces(ids))
        start = complete_prefix_length(b"".join(codec.pieces(ids[:-1])))  # where the character being spelled begins
        greedy = GenerationSettings(max_new_tokens=max_tokens, do_sample=False, top_alternatives=1, seed=0)
        run = self.start("", greedy, backend=parent.info.backend, variant=parent.info.variant, model=parent.info.model,
                         prompt_ids=ids)
        with closing(iter(run)) as records:  # not started while the bytes are whole already; ended as soon as they are
            while complete_prefix_length(data) < len(data):
                record = next(records, None)
                if record is None:
                    return None
                data += record.bytes
        text = escape_bytes(data[start:])
        return regex.match(r"\X", text).group() if text else None

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
            self.admission.release(run)

    def inside(self, result: GenerationResult):
        """The Inside view of a run (analysis.inside.Inside), built once per run and backend.

        The run's model must still be there with the same weights: a saved run's fingerprint is compared
        with the model's now.
        """
        from .analysis.inside import Inside, InsideError, check_fingerprint

        info = result.info
        key = (result.run_id, info.model, info.backend, info.variant, repr(result.intervention),
               tuple(t.token_id for t in result.prompt_tokens + result.tokens))
        with self._inside_lock:
            if key in self._insides:
                return self._insides[key]
        notice = None
        if result.run_id is not None and self.history is not None:
            saved = self.history.get(result.run_id)
            stored = saved.get("model_sha256") if saved else None
            try:
                source = self.source_for(info.model)
                if not self.has_files(source):
                    raise PlaygroundError(key="models.no_files", location=source.location)
            except PlaygroundError as exc:
                raise InsideError(key="inside.model_gone", model=info.model, error=str(exc)) from None
            notice = check_fingerprint(stored, self.model_fingerprint(info.model), info.model)
        backend = self.run_backend(result, need="logits")
        reference = backend if info.backend == "torch" else self.backend("torch", None, info.model)
        view = Inside(result, backend, reference.model, self.source_for(info.model).codec)
        if notice:
            view.notices.append(notice)
        with self._inside_lock:
            self._insides[key] = view
            while len(self._insides) > 2:  # each holds a run's residual stream (up to 38 MB for GPT-2 small)
                self._insides.pop(next(iter(self._insides)))
        return view

    def run_backend(self, result: GenerationResult, need: str = "attention"):
        """The backend a view looks into a run with (`analysis_backend`): for a run made with an experiment's
        intervention, the model as the run saw it (the same intervention, means over the same prompt)."""
        info = result.info
        backend = self.analysis_backend(info.backend, info.variant, info.model, need=need)
        if not result.intervention:
            return backend
        codec = self.source_for(info.model).codec
        return IntervenedBackend(torch_backend_of(backend), Intervention.from_dict(result.intervention), codec,
                                 [t.token_id for t in result.prompt_tokens] or [codec.start_id])

    def inside_of_run(self, run_id, owner: str | None = None) -> object:
        """The Inside view of a saved run, by its id in the history (only one of `owner`'s, when given)."""
        from .analysis.inside import InsideError
        from .config import as_int

        run_id = as_int("run_id", run_id)
        if self.history is None:
            raise InsideError(key="inside.no_history", reason=self.history_disabled or "it is disabled")
        saved = self.history.get(run_id, owner=owner)
        if saved is None:  # another user's run is as unknown as one that never was
            raise InsideError(key="inside.no_run", run_id=run_id)
        codec = None
        if any("bytes" not in t for part in (saved.get("tokens") or {}).values() for t in part):
            codec = self.source_for(saved.get("model")).codec
        return self.inside(result_from_saved(saved, codec))

    def _save(self, run: Generation, status: str, error: str | None) -> None:
        if self.history is None:
            return
        # Saved with each run: the Inside view refuses a run whose model changed since. A batch shares one model.
        fingerprint = self.model_fingerprint(run.result.info.model)
        for result in run.results:
            # In a stopped batch, a sample that had already finished (end of text, stop sequence) is complete.
            finished = result.finish_reason in ("length", "eos", "stop_sequence")
            own_status = "complete" if status == "stopped" and finished else status
            try:
                result.run_id = self.history.save_run(saved_row(result, own_status, error, model_sha256=fingerprint)
                                                      | {"owner": run.owner})
            except sqlite3.Error as exc:
                # Disk full, file removed, ...: the user still gets their output, and is told it was not saved.
                result.notices.append(Notice(key="notice.not_saved", error=str(exc)))

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
