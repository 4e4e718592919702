"""Fine-tuning that stops and goes on: checkpoints, resume (bit for bit on the CPU), refusals, TensorBoard event files."""

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from playground.errors import PlaygroundError, TrainingCancelled
from playground.finetune.checkpoints import JOBS_FOLDER, JobFolder, resumable_jobs
from playground.finetune.jobs import FineTuneJobs
from playground.finetune.run import FineTuneSettings, execute_plan, plan_finetune, plan_resume, run_finetune

GPL3 = Path("/usr/share/common-licenses/GPL-3")
# Small and quick, with dropout (the demo model's) and a shuffled batch order: both must carry over a resume.
SETTINGS = dict(block_size=32, batch_size=4, warmup_steps=2, eval_every=4, checkpoint_every=3, max_steps=12, learning_rate=3e-3)


@pytest.fixture(scope="module")
def legal_text() -> str:
    return GPL3.read_text(encoding="utf-8")[:8_000]


def cancel_after(step: int):
    """A (progress, cancel) pair that cancels once `step` steps are done."""
    cancel = threading.Event()

    def progress(update):
        if update["step"] >= step and update["phase"] == "training":
            cancel.set()

    return progress, cancel


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_resumed_run_is_the_run_that_never_stopped(tiny_source, legal_text, tmp_path, method):
    settings = FineTuneSettings(method=method, **SETTINGS)
    whole = run_finetune(tiny_source, legal_text, settings, "whole", tmp_path / "a", threads=1)

    progress, cancel = cancel_after(7)
    with pytest.raises(TrainingCancelled):
        run_finetune(tiny_source, legal_text, settings, "parts", tmp_path / "b", progress=progress, cancel=cancel, threads=1)
    assert not (tmp_path / "b" / "parts").exists()  # no model: a checkpoint after step 7 (the cancel's) and one after step 6
    job = JobFolder.of(tmp_path / "b", "parts")
    assert [p.name for p in job.checkpoints()] == ["checkpoint-00000006.pt", "checkpoint-00000007.pt"]
    assert resumable_jobs(tmp_path / "b")[0] | {"modified": 0} == {
        "name": "parts", "base_model": tiny_source.name, "step": 7, "total_steps": 12, "owner": "", "modified": 0}

    updates = []
    resumed = execute_plan(plan_resume(tmp_path / "b", "parts"), progress=updates.append, threads=1)
    assert updates[0]["step"] == 7 and len(updates[0]["train_losses"]) == 7  # the curve so far is shown from the start
    assert resumed["resumed_from"] == 7 and resumed["steps"] == 12
    assert resumed["loss_curve"] == whole["loss_curve"]  # every step's loss, and every evaluation, bit for bit
    for key in ("val_loss_before", "val_loss_after", "kept_best"):
        assert resumed[key] == whole[key]
    a, b = load_file(tmp_path / "a" / "whole" / "model.safetensors"), load_file(tmp_path / "b" / "parts" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not job.root.exists()  # saved: nothing left to resume


def test_tensorboard_event_files_hold_the_curves_and_move_into_the_model(tiny_source, legal_text, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = run_finetune(tiny_source, legal_text, FineTuneSettings(**SETTINGS, test_fraction=0.1), "board", tmp_path, threads=1)
    events = EventAccumulator(str(tmp_path / "board" / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/loss", "train/learning_rate", "validation/loss", "validation/perplexity", "test/perplexity"} <= set(scalars)
    train = [(e.step, round(e.value, 5)) for e in events.Scalars("train/loss")]
    assert train == [tuple(p) for p in report["loss_curve"]["train"]]
    assert [e.step for e in events.Scalars("validation/loss")] == [p[0] for p in report["loss_curve"]["val"]]
    assert not (tmp_path / JOBS_FOLDER / "board").exists()


def test_a_resume_refuses_what_does_not_match_and_falls_back_from_an_unreadable_checkpoint(tiny_source, legal_text, tmp_path):
    progress, cancel = cancel_after(7)
    with pytest.raises(TrainingCancelled):
        run_finetune(tiny_source, legal_text, FineTuneSettings(**SETTINGS), "stopped", tmp_path, progress=progress, cancel=cancel,
                     threads=1)
    job = JobFolder.of(tmp_path, "stopped")

    # The same name for a new job would lose the checkpoints: refused, with the way to go on.
    with pytest.raises(PlaygroundError, match="can go on from its checkpoint at step 7"):
        plan_finetune(tiny_source, legal_text, FineTuneSettings(**SETTINGS), "stopped", tmp_path)
    # Another user's job is not theirs to resume (nor to learn of).
    with pytest.raises(PlaygroundError, match="no stopped job named stopped"):
        plan_resume(tmp_path, "stopped", owner="mallory")
    for bad in ("../stopped", ".finetune", "", "nothing-here"):
        with pytest.raises(PlaygroundError, match="no stopped job"):
            plan_resume(tmp_path, bad)

    # A truncated newest checkpoint: refused with the reason, the one before used (and left on disk).
    newest = job.checkpoints()[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    plan = plan_resume(tmp_path, "stopped")
    assert plan.resume["step"] == 6 and "checkpoint-00000007.pt could not be read" in plan.notices[-1]
    assert newest.exists()
    for path in job.checkpoints():
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(PlaygroundError, match="No checkpoint of the job stopped could be read"):
        plan_resume(tmp_path, "stopped")

    # Settings changed behind its back (here: the job's own record edited): refused with what differs.
    (job.root / "checkpoint-00000009.pt").unlink(missing_ok=True)
    job.save({"step": 9, "identity": {"settings": {"learning_rate": 1.0}}})
    with pytest.raises(PlaygroundError, match="does not match this run's base model"):
        plan_resume(tmp_path, "stopped")


def test_jobs_resume_a_cancelled_job_for_its_owner(tiny_source, legal_text, tmp_path):
    jobs = FineTuneJobs(tmp_path, None, write_interval_s=0.0)
    jobs.start(tiny_source, legal_text, FineTuneSettings(**(SETTINGS | {"max_steps": 10_000})), "long", owner="ana")
    try:
        for _ in range(2000):
            if (jobs.current() or {}).get("progress", {}).get("checkpoint_step"):
                break
            threading.Event().wait(0.02)
    finally:
        assert jobs.cancel()
        cancelled = jobs.wait(60)
    assert cancelled["status"] == "cancelled"
    step = cancelled["progress"]["checkpoint_step"]
    assert step >= 3 and [j["name"] for j in jobs.resumable("ana")] == ["long"] and jobs.resumable("ben") == []
    with pytest.raises(PlaygroundError, match="no stopped job"):
        jobs.resume("long", owner="ben")
    job = jobs.resume("long", owner="ana")
    assert job["status"] == "running" and job["progress"]["step"] >= step
    jobs.cancel()
    assert jobs.wait(60)["status"] == "cancelled"
    assert json.loads((tmp_path / JOBS_FOLDER / "long" / "job.json").read_text())["owner"] == "ana"


def test_a_job_read_as_cancelled_can_be_resumed_that_moment(tiny_source, legal_text, tmp_path):
    """Whoever reads that the job was cancelled (a page polling it) may resume it at once: the process's training slot
    is free before the status says the job ended, even while the database is slow to take the final write (here half a
    second, as a loaded disk can be). Before, a Resume clicked in that window was told a job was still running."""
    from playground.history import HistoryStore

    class SlowDisk(HistoryStore):
        def update_job(self, job_id, **changes):
            if changes.get("status") == "cancelled":
                time.sleep(0.5)
            super().update_job(job_id, **changes)

    jobs = FineTuneJobs(tmp_path / "models", SlowDisk(tmp_path / "history.db"), write_interval_s=0.0)
    jobs.start(tiny_source, legal_text, FineTuneSettings(**(SETTINGS | {"max_steps": 10_000})), "long")
    try:
        assert wait_for(lambda: (jobs.current()["progress"].get("checkpoint_step") or 0) >= 3)
    finally:
        jobs.cancel()
    assert wait_for(lambda: jobs.current()["status"] == "cancelled")
    # That moment the thread still writes the end to the database: a refused start must not keep the slot it took.
    with pytest.raises(PlaygroundError):
        jobs.start(tiny_source, "too short", FineTuneSettings(**SETTINGS), "other")
    resumed = jobs.resume("long")
    try:
        assert resumed["status"] == "running"
    finally:
        jobs.cancel()
    assert jobs.wait(60)["status"] == "cancelled"


def wait_for(condition, timeout_s: float = 60.0) -> bool:
    """Poll `condition` every millisecond (a page polls less often: this finds a window a page would hit only sometimes)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.001)
    return False


@pytest.mark.slow
def test_cli_ctrl_c_keeps_a_checkpoint_and_resume_finishes_the_job(tiny_model_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    data = tmp_path / "legal.txt"
    data.write_bytes(GPL3.read_bytes()[:8_000])
    command = [sys.executable, "-m", "playground.finetune", "--models-dir", str(tmp_path / "m")]
    options = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONIOENCODING": "utf-8"},
                   cwd=Path(__file__).resolve().parent.parent)
    first = subprocess.Popen([*command, "--model", str(tiny_model_dir), "--data", str(data), "--name", "cli", "--max-steps", "400",
                              "--block-size", "32", "--checkpoint-every", "50"], **options)
    job = JobFolder.of(tmp_path / "m", "cli")
    try:
        for _ in range(3000):  # until the run has written a checkpoint (or ended)
            if job.checkpoints() or first.poll() is not None:
                break
            threading.Event().wait(0.02)
        first.send_signal(signal.SIGINT)  # as Ctrl-C: stops after the step, with a checkpoint
        out, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130, err
    step = job.latest_step()
    assert f"Cancelled: no model was saved. Go on from step {step} with --resume cli" in err and "Traceback" not in err
    done = subprocess.run([*command, "--resume", "cli", "--json"], timeout=300, **options)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Resuming cli from step {step} of 400.")
    report = json.loads(done.stdout[done.stdout.index("\n{") + 1:])
    assert report["resumed_from"] == step and report["steps"] == 400 and not job.root.exists()
    assert (tmp_path / "m" / "cli" / "tensorboard").is_dir()
