"""Tasks of lm-evaluation-harness (`lm-eval`, the `tasks` extra) against a playground backend: the tasks shipped in
evaluate/tasks/, a folder of the user's own (YAML + JSONL, offline), or the harness's own tasks when the hub is reachable.

The harness's `LM` over a backend is lm.py's `PlaygroundLM` (imported only here, once lm-eval is known to be there).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..backends.base import Backend
from ..errors import DataError, PlaygroundError
from ..models import ModelSource
from ..paths import tasks_dir

SHIPPED_TASKS = Path(__file__).resolve().parent / "tasks"  # python_mc_en/, common_mc_zh/: a YAML and its JSONL each
TASK_SUFFIXES = (".yaml", ".yml")
HUB_HOST = ("huggingface.co", 443)
HUB_TIMEOUT_S = 3.0


def require_lm_eval() -> None:
    """lm-eval is an optional extra: without it, a message naming the extra, not an ImportError."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise PlaygroundError(key="tasks.not_installed", field="tasks") from None


@dataclass(frozen=True)
class TaskSpec:
    """One task to run: `config` is a local task's YAML as lm-eval reads it (its data files made absolute), None for a
    task of the harness's own, which lm-eval finds by `name` and downloads from the hub."""

    name: str
    config: dict | None = None
    source: str = ""  # the YAML file it came from, or "hub"


def _task_folders(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and any(q.suffix in TASK_SUFFIXES for q in p.iterdir())}


def shipped_task_names() -> list[str]:
    """The tasks shipped with the playground (a folder of evaluate/tasks/ each, named as its task)."""
    return list(_task_folders(SHIPPED_TASKS))


def available_tasks() -> dict[str, Path]:
    """The task folders that may be chosen by name (the Evaluate tab, `/evaluate`): the shipped ones, then each folder
    of the user's tasks folder (paths.tasks_dir: `tasks/` beside the package), named by its folder."""
    return _task_folders(tasks_dir()) | _task_folders(SHIPPED_TASKS)  # a shipped name is never shadowed


def _yaml_error(path: Path, exc: Exception) -> DataError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark is not None else "-"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return DataError(key="tasks.bad_yaml", field="tasks", name=path.name, where=where, problem=problem)


def _check_jsonl(path: Path) -> None:
    """Every non-empty line of a JSONL data file is a JSON object: the first that is not is named with its line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(key="tasks.bad_jsonl", field="tasks", name=path.name, line=1, problem="not UTF-8 text") from None
    records = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(key="tasks.bad_jsonl", field="tasks", name=path.name, line=number, problem=exc.msg) from None
        if not isinstance(record, dict):
            raise DataError(key="tasks.bad_jsonl", field="tasks", name=path.name, line=number, problem="not a JSON object")
        records += 1
    if not records:
        raise DataError(key="tasks.bad_jsonl", field="tasks", name=path.name, line=1, problem="no records")


def _local_data_files(config: dict, folder: Path, yaml_name: str) -> None:
    """A local task's data files, named relative to its YAML, made absolute (lm-eval would look in the working
    directory) and checked: each is there and, for JSONL, every line a JSON object."""
    kwargs = config.get("dataset_kwargs") or {}
    files = kwargs.get("data_files")
    if files is None:
        return
    named = files if isinstance(files, dict) else {"": files}
    resolved = {}
    for split, paths in named.items():
        absolute = []
        for name in [paths] if isinstance(paths, str) else list(paths):
            path = (folder / name).resolve()
            if not path.is_file():
                raise DataError(key="tasks.missing_data", field="tasks", name=str(name), task=yaml_name)
            if path.suffix.lower() == ".jsonl":
                _check_jsonl(path)
            absolute.append(str(path))
        resolved[split] = absolute[0] if isinstance(paths, str) else absolute
    config["dataset_kwargs"] = {**kwargs, "data_files": resolved if isinstance(files, dict) else resolved[""]}


def local_tasks(folder: Path | str) -> list[TaskSpec]:
    """The tasks of a folder: each `*.yaml` in it (not below) with a `task:` name, read by lm-eval's own YAML loader
    (`!function`, `include:`), its data files checked. A folder that is not there, holds no YAML, or holds a YAML or a
    JSONL file that does not read is refused with the file and line."""
    require_lm_eval()
    from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval's loader (private in 0.4.13, which the extra pins)
    import yaml

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(key="tasks.no_folder", field="tasks", path=str(folder))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in TASK_SUFFIXES and p.is_file())
    if not files:
        raise DataError(key="tasks.no_yaml", field="tasks", path=str(folder))
    specs = []
    for path in files:
        try:
            config = load_yaml(path, resolve_func=True)
        except yaml.YAMLError as exc:
            raise _yaml_error(path, exc) from None
        except (ValueError, OSError, ImportError, AttributeError) as exc:  # not a mapping, an include or !function missing
            raise _yaml_error(path, exc) from None
        if not isinstance(config.get("task"), str):
            raise DataError(key="tasks.bad_yaml", field="tasks", name=path.name, where="-", problem="no `task:` name")
        _local_data_files(config, path.parent, path.name)
        specs.append(TaskSpec(config["task"], config, str(path)))
    return specs


def hub_reachable() -> bool:
    """Whether the hub answers: not when HF_HUB_OFFLINE is set, nor when a connection fails within a few seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=HUB_TIMEOUT_S):
            return True
    except OSError:
        return False


def resolve_tasks(names: list[str], folders: bool = True) -> list[TaskSpec]:
    """What `--tasks` names, each once: a task folder listed by `available_tasks` (python_mc_en, common_mc_zh, the
    user's tasks/), a folder of task files given by its path (only with `folders`: the command line, not the app, whose
    users may not read the server's disk), or a task of lm-eval's own (hellaswag, ...), which needs the hub: offline,
    a clear refusal."""
    if not names:
        return []
    require_lm_eval()
    specs: list[TaskSpec] = []
    listed = available_tasks()
    for name in names:
        name = str(name).strip()
        if not name:
            continue
        path_like = os.sep in name or "/" in name or name.startswith((".", "~"))
        if name in listed:
            specs += local_tasks(listed[name])
        elif path_like and not folders:
            raise PlaygroundError(key="tasks.not_here", field="tasks", name=name, available=", ".join(listed))
        elif folders and (path_like or Path(name).expanduser().is_dir()):
            specs += local_tasks(name)
        elif not hub_reachable():
            raise PlaygroundError(key="tasks.hub_offline", field="tasks", name=name, shipped=", ".join(listed))
        else:
            specs.append(TaskSpec(name, None, "hub"))
    return list({spec.name: spec for spec in specs}.values())


def playground_lm(backend: Backend, source: ModelSource):
    """lm-eval's `LM` over `backend` (lm.PlaygroundLM; its module imports lm-eval, which is optional)."""
    require_lm_eval()
    from .lm import PlaygroundLM

    return PlaygroundLM(backend, source)


def metrics_of(results: dict, task: str) -> dict:
    """One task's numbers from lm-eval's results: {"acc": ..., "acc_stderr": ..., "acc_norm": ..., "samples": n}
    (lm-eval's "metric,filter" keys, the default filter "none" dropped)."""
    numbers = {}
    for key, value in results["results"][task].items():
        metric, _, kind = key.partition(",")
        if isinstance(value, (int, float)) and kind == "none":
            numbers[metric] = float(value)
    samples = results.get("n-samples", {}).get(task, {})
    numbers["samples"] = int(samples.get("effective", samples.get("original", 0)))
    return numbers


def task_columns(results: list[dict | None]) -> list[tuple[str, str]]:
    """(task, metric) of every number in `results` (each an evaluation's `tasks`) that has a standard error beside it
    (acc, acc_norm, ...), in the order met: the columns a table of evaluations adds for its tasks."""
    columns: dict[tuple[str, str], None] = {}
    for tasks in results:
        for task, numbers in (tasks or {}).items():
            for metric in numbers:
                if f"{metric}_stderr" in numbers:
                    columns[(task, metric)] = None
    return list(columns)


def task_cell(tasks: dict | None, task: str, metric: str) -> str | None:
    """`0.833 ± 0.078`: a task's metric and its standard error as lm-eval gives it; None when the row has no such number."""
    numbers = (tasks or {}).get(task) or {}
    if metric not in numbers:
        return None
    stderr = numbers.get(f"{metric}_stderr")
    return f"{numbers[metric]:.3f}" + (f" ± {stderr:.3f}" if isinstance(stderr, float) and stderr == stderr else "")


def run_tasks(backend: Backend, source: ModelSource, tasks: list[TaskSpec], limit: int | None = None) -> dict[str, dict]:
    """Run `tasks` on `backend` in this process, zero-shot unless a task's YAML says otherwise: {task name: its numbers}.

    Through lm-eval's evaluator (`lm_eval.evaluator.evaluate`), as `simple_evaluate` does after loading its model, but
    without the rest of `simple_evaluate`: it seeds Python's, NumPy's and torch's global generators (in the app, the
    runs of every user) and collects the environment (torch's collect_env, about 5 s of subprocesses per call)."""
    require_lm_eval()
    import logging

    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    hub = any(spec.config is None for spec in tasks)
    manager = TaskManager(include_defaults=hub)  # indexing the harness's own ~200 task folders only when one is asked for
    loaded = manager.load([spec.config if spec.config is not None else spec.name for spec in tasks])
    for task in loaded["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=0)  # the few-shot examples' own generator, as simple_evaluate's default seeds it
    results = evaluate(lm=playground_lm(backend, source), task_dict=loaded, limit=limit, bootstrap_iters=1000,
                       log_samples=False)
    return {spec.name: metrics_of(results, spec.name) for spec in tasks}
