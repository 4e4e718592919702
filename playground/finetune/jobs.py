"""The app's fine-tuning service: one job at a time, on its own thread, its state kept in the history database.

    jobs = FineTuneJobs(models_root, store)
    job = jobs.start(base, Path("notes.txt"), FineTuneSettings(method="lora"), "my-notes")  # checks, then trains
    jobs.current()   # {"id", "status", "name", "base_model", "settings", "progress", "report", "error", ...}
    jobs.cancel()    # stops within a step; no model is written, a checkpoint is kept
    jobs.resume("my-notes")  # goes on from that checkpoint
    jobs.shutdown()  # as the app closes: cancels (a checkpoint is kept) and waits

`start` runs every check of `plan_finetune` (name, settings, base model, data) before it returns, so a
bad input is a PlaygroundError for the caller to show, and only then trains on a background thread.
Progress goes to memory at every step and to the `jobs` table at most every `write_interval_s`
seconds (and at every phase change), so a page reload or another browser can follow the job.
"""

from __future__ import annotations

import copy
import itertools
import sys
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path

from ..errors import PlaygroundError, TrainingCancelled
from .checkpoints import resumable_jobs
from .run import FineTuneSettings, execute_plan, plan_finetune, plan_resume

WRITE_INTERVAL_S = 2.0


class FineTuneJobs:
    """Starts, follows and cancels fine-tuning jobs; at most one trains at a time in this process."""

    # One slot for the whole process, not per instance: two training runs would halve each other's speed
    # and double the memory, whichever object started them.
    _slot = threading.Lock()

    def __init__(self, models_root: Path | str, store=None, write_interval_s: float = WRITE_INTERVAL_S):
        self.models_root = Path(models_root)
        self.store = store  # a playground.history.HistoryStore, or None (then the state lives in memory only)
        self.write_interval_s = write_interval_s
        self._job: dict | None = None
        self._job_lock = threading.Lock()  # guards self._job between the training thread and readers
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._ids = itertools.count(1)
        if store is not None:
            store.fail_interrupted_jobs()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, base, data, settings: FineTuneSettings, name: str, owner: str = "", test_data=None) -> dict:
        """Check everything, then train on a background thread for `owner` (a login, "" without one); returns the job
        (as `current()` would).

        `base` is a ModelSource; `data` a TrainingText, a Path to a .txt/.jsonl/.csv file, or pasted text; `test_data` the
        same for a test file of the user's, or None.
        Raises PlaygroundError for any bad input, and when a job is already running.
        """
        def plan():
            made = plan_finetune(base, data, settings, name, self.models_root, test_data=test_data)
            made.owner = owner
            return made

        return self._launch(plan)

    def resume(self, name: str, owner: str | None = "") -> dict:
        """Go on with the stopped job `name` from its newest checkpoint (checkpoints.JobFolder), on a background thread, for
        the user it was started for; returns the job. `owner`: who asks (None: anyone's job, as for an admin). Raises
        PlaygroundError when there is no such job of theirs to resume, or a job is running."""
        return self._launch(lambda: plan_resume(self.models_root, name, owner))

    def resumable(self, owner: str | None = "") -> list[dict]:
        """The stopped jobs that can go on, newest first (checkpoints.resumable_jobs): `owner`'s, or everyone's (None)."""
        return resumable_jobs(self.models_root, owner)

    def _launch(self, make_plan) -> dict:
        if not self._slot.acquire(blocking=False):
            raise PlaygroundError(key="finetune.busy")
        started = False
        try:
            plan = make_plan()
            now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            job = {"id": None, "created_at": now, "updated_at": now, "status": "running", "name": plan.name,
                   "base_model": plan.base.name, "settings": plan.settings.to_dict(), "progress": {"phase": "queued",
                   "step": plan.resume["step"] if plan.resume else 0, "total_steps": plan.total_steps}, "report": None, "error": None, "plan": plan.summary(), "owner": plan.owner}
            job["id"] = (self.store.create_job(plan.name, plan.base.name, job["settings"], status="running", owner=plan.owner)
                         if self.store is not None else next(self._ids))
            with self._job_lock:
                self._job = job
            launched = copy.deepcopy(job)  # as it starts: the thread may be a step on before the caller reads it
            self._cancel = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(plan, job), name=f"finetune-{job['id']}", daemon=True)
            self._thread.start()
            started = True
        except BaseException:
            if not started:  # (the last job's thread may still be alive, writing its end: the slot is this call's)
                self._slot.release()
            raise
        return launched

    def cancel(self, owner: str | None = None) -> bool:
        """Ask the running job to stop (within a step); False when none is running (or it is not `owner`'s, when given)."""
        if not self.running or not self._is_of(owner):
            return False
        self._cancel.set()
        return True

    def _is_of(self, owner: str | None) -> bool:
        with self._job_lock:
            return owner is None or (self._job is not None and self._job.get("owner", "") == owner)

    def current(self, owner: str | None = None) -> dict | None:
        """The job this object started last (live), else the newest job in the database (another process's, or an old
        one); with `owner`, that user's jobs only."""
        with self._job_lock:
            if self._job is not None and (owner is None or self._job.get("owner", "") == owner):
                return copy.deepcopy(self._job)
        return self.store.latest_job(owner) if self.store is not None else None

    def wait(self, timeout: float | None = None) -> dict | None:
        """Block until the running job ends (or `timeout` seconds pass); returns `current()`."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.current()

    def shutdown(self, timeout_s: float = 300.0) -> dict | None:
        """Cancel the running job, if any, and wait until it has stopped within its step and kept its checkpoint (it
        can be resumed later): for an app that is closing, whose process would otherwise cut the training thread off
        mid-step. Returns the job as it ended, None when none was running."""
        if not self.running:
            return None
        self._cancel.set()
        return self.wait(timeout_s)

    # --- the training thread -------------------------------------------------------------------------

    def _update(self, job: dict, write: bool, **changes) -> None:
        """Change `job` (the training thread's own record: self._job may already be a newer job's) and, when `write`, its
        row in the database."""
        with self._job_lock:
            job.update(changes, updated_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
        if write and self.store is not None:
            self.store.update_job(job["id"], **{k: v for k, v in changes.items() if k in ("status", "progress", "report", "error")})

    def _run(self, plan, job: dict) -> None:
        import time

        last = {"written": 0.0, "phase": None}

        def on_progress(progress: dict) -> None:
            now = time.monotonic()
            due = now - last["written"] >= self.write_interval_s or progress["phase"] != last["phase"]
            if due:
                last.update(written=now, phase=progress["phase"])
            self._update(job, due, progress=progress)

        try:
            report = execute_plan(plan, on_progress, self._cancel)
            end = dict(status="complete", report=report)
        except TrainingCancelled as exc:
            end = dict(status="cancelled", error=error_record(exc))
        except PlaygroundError as exc:
            end = dict(status="error", error=error_record(exc))
        except Exception as exc:  # a crash must still end the job with a reason; the traceback goes to the log
            traceback.print_exc(file=sys.stderr)
            end = dict(status="error", error=_failure_message(exc))
        finally:
            # The slot is free before anyone can read that the job ended: whoever sees "cancelled" and resumes at once is
            # not told that a job is running (a test, clicking Resume as soon as the page said so, was).
            self._slot.release()
        with self._job_lock:
            progress = job["progress"]
        self._update(job, True, progress=progress, **end)


def error_record(exc: PlaygroundError) -> dict:
    """How a job's error is stored: its locale key and parameters (as text), so each reader sees it in their language."""
    if exc.key is None:
        return {"text": str(exc)}
    return {"key": exc.key, "params": {name: value if isinstance(value, (int, float)) else str(value) for name, value in exc.params.items()}}


def _failure_message(exc: Exception) -> dict:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return {"key": "finetune.out_of_memory", "params": {"error": text[:200]}}
    return {"key": "finetune.crashed", "params": {"kind": type(exc).__name__, "error": text[:500]}}
