"""A fine-tuning job's own folder: what it was asked to do, its checkpoints, and its TensorBoard event files.

    models/.finetune/NAME/
        job.json                  the base model, settings, owner and data summary of the run
        data.json                 the training texts themselves, so a resume needs no upload
        checkpoint-00000040.pt    the newest checkpoints (CHECKPOINTS_KEPT of them): a run goes on from there
        tensorboard/              event files (`tensorboard --logdir models/.finetune/NAME/tensorboard`)

The folder exists while a job runs and after one was cancelled, failed or cut off; once the model is saved, its
event files move into the model's folder and the job folder goes. A hidden folder, so it is never listed as a model.
A checkpoint is written to a temporary file and renamed into place, so a crash mid-write leaves the previous ones;
one that still cannot be read (a disk error, a truncated copy) is refused with the reason, and the one before it used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import Notice, PlaygroundError, first_line
from .data import TrainingText

JOBS_FOLDER = ".finetune"
CHECKPOINTS_KEPT = 2
CHECKPOINT_FORMAT = 1
_CHECKPOINT = re.compile(r"^checkpoint-(\d{8})\.pt$")


@dataclass(frozen=True)
class JobFolder:
    root: Path

    @classmethod
    def of(cls, models_root: Path | str, name: str) -> "JobFolder":
        return cls(Path(models_root) / JOBS_FOLDER / name)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "tensorboard"

    def create(self, description: dict, text: TrainingText | None, test_text: TrainingText | None = None) -> None:
        """Start the folder of a new run (an old one of the same name, without checkpoints, is replaced); without `text`
        (a plan made by hand) it cannot be resumed."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        _write_json(self.root / "job.json", description)
        for name, value in (("data.json", text), ("test.json", test_text)):
            if value is not None:
                _write_json(self.root / name, {"texts": list(value.texts), "source": value.source, "encoding": value.encoding,
                                               "sha256": value.sha256})

    def description(self) -> dict | None:
        """job.json, or None when there is no job of this name (or its folder is unreadable)."""
        try:
            return json.loads((self.root / "job.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def text(self) -> TrainingText:
        """The training texts (PlaygroundError when the job kept none: a plan made by hand)."""
        try:
            return _read_text(self.root / "data.json")
        except OSError:
            raise PlaygroundError(key="finetune.no_checkpoint", name=self.name) from None

    def test_text(self) -> TrainingText | None:
        """The user's test texts, when the job had a test file."""
        path = self.root / "test.json"
        return _read_text(path) if path.is_file() else None

    def checkpoints(self) -> list[Path]:
        """Its checkpoint files, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if _CHECKPOINT.match(p.name))

    def save(self, state: dict) -> Path:
        """Write a checkpoint of step `state["step"]` atomically, then drop all but the newest CHECKPOINTS_KEPT."""
        import torch

        path = self.root / f"checkpoint-{state['step']:08d}.pt"
        partial = path.with_name(path.name + ".partial")
        torch.save({"format": CHECKPOINT_FORMAT, **state}, partial)
        os.replace(partial, path)
        for old in self.checkpoints()[:-CHECKPOINTS_KEPT]:
            old.unlink(missing_ok=True)
        return path

    def load(self) -> tuple[dict, list[Notice]]:
        """The newest checkpoint that reads, and a notice for each newer one that did not (it is left on disk).
        PlaygroundError when none does."""
        import torch

        notices = []
        for path in reversed(self.checkpoints()):
            try:
                # weights_only: tensors, numbers, strings and containers, never code (a checkpoint is a file on disk)
                state = torch.load(path, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
                    raise ValueError(f"not a format-{CHECKPOINT_FORMAT} checkpoint")
                return state, notices
            except Exception as exc:  # any failure to read it: refuse this one with the reason, try the one before
                notices.append(Notice(key="finetune.checkpoint_unreadable", file=path.name, error=first_line(exc)[:200]))
        if notices:
            raise PlaygroundError(key="finetune.checkpoint_none_readable", name=self.name,
                                  errors="; ".join(n.params["error"] for n in notices))
        raise PlaygroundError(key="finetune.no_checkpoint", name=self.name)

    def latest_step(self) -> int | None:
        files = self.checkpoints()
        return int(_CHECKPOINT.match(files[-1].name).group(1)) if files else None

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            self.root.parent.rmdir()  # the jobs' folder too, once no job is left in it
        except OSError:
            pass


def resumable_jobs(models_root: Path | str, owner: str | None = None) -> list[dict]:
    """Jobs that can go on (a folder with a checkpoint), newest first: name, base_model, step, total_steps, owner.
    With `owner`, that user's only."""
    folder = Path(models_root) / JOBS_FOLDER
    jobs = []
    for root in folder.iterdir() if folder.is_dir() else ():
        job = JobFolder(root)
        step, description = job.latest_step(), job.description()
        if step is None or description is None or (owner is not None and description.get("owner", "") != owner):
            continue
        jobs.append({"name": job.name, "base_model": description["base_model"]["name"], "step": step,
                     "total_steps": description.get("total_steps"), "owner": description.get("owner", ""),
                     "modified": job.checkpoints()[-1].stat().st_mtime})
    return sorted(jobs, key=lambda j: -j["modified"])


def _read_text(path: Path) -> TrainingText:
    data = json.loads(path.read_text(encoding="utf-8"))
    return TrainingText(tuple(data["texts"]), data["source"], data["encoding"], data["sha256"])


def _write_json(path: Path, value) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)
