"""An experiment as the Experiments tab and `/intervene` ask for it: checked, run on the playground's PyTorch backend,
answered as JSON. The one place that turns a request (prompt or saved run, intervention, target) into a result."""

from __future__ import annotations

from ..config import GenerationSettings, as_int
from .ablation import head_scan, rescore
from .backend import torch_backend_of
from .intervention import ExperimentError, Intervention
from .patching import PATCH_KINDS, patch
from .steering import steered_pair
from .target import Target, encode_prompt

EXPERIMENTS = ("rescore", "head_scan", "patch", "steer")


def experiment_model(playground, backend: str | None, model: str | None):
    """The PyTorch model an experiment runs on: `backend` must be torch (refused in both languages otherwise, before
    an ONNX export or a call to a serving engine); returns (TorchBackend, ModelSource)."""
    name = backend or "torch"
    if name != "torch":
        raise ExperimentError(key="experiments.needs_torch", field="backend", backend=name)
    runner = torch_backend_of(playground.backend("torch", None, model))
    return runner, playground.source_for(runner.info.model)


def ids_of_run(playground, run_id, owner: str | None) -> list[int]:
    """The token ids (prompt and output) of saved run `run_id`, one of `owner`'s; refused if its model changed since."""
    run_id = as_int("run_id", run_id)
    saved = playground.history.get(run_id, owner=owner) if playground.history is not None else None
    if saved is None:
        raise ExperimentError(key="experiments.no_run", field="run_id", run_id=run_id)
    stored, now = saved.get("model_sha256"), playground.model_fingerprint(saved.get("model"))
    if stored is not None and now is not None and stored != now:
        raise ExperimentError(key="experiments.model_changed", field="run_id", run_id=run_id, model=saved.get("model"))
    tokens = saved.get("tokens") or {}
    return [t["token_id"] for t in tokens.get("prompt", []) + tokens.get("output", [])]


def run_experiment(playground, experiment: str, prompt=None, run_id=None, intervention: dict | None = None,
                   target=None, contrast=None, corrupted=None, kind: str = "resid", mode: str = "zero",
                   model: str | None = None, backend: str | None = None, max_new_tokens=32, seed=None,
                   owner: str = "", viewer: str | None = None) -> dict:
    """One experiment, its numbers as JSON:
    rescore   every position of `prompt` (or saved run `run_id`) under `intervention`: prob, rank, change, top 5;
    head_scan each head knocked out in turn (`mode`): the change of log p(`target`), or of logit(`target`) -
              logit(`contrast`), at the last position, layers x heads;
    patch     `kind` (resid, heads, mlp) patched from `prompt` (clean) into `corrupted`: the share of the logit
              difference `target` - `contrast` each patch restores;
    steer     `prompt` continued with and without `intervention` (its steering, and any knock-outs), the same seed.
    """
    if experiment not in EXPERIMENTS:
        raise ExperimentError(key="experiments.bad_experiment", field="experiment", value=experiment,
                              experiments=", ".join(EXPERIMENTS))
    runner, source = experiment_model(playground, backend, model)
    torch_model, codec = runner.model, source.codec
    change = Intervention.from_dict(intervention)
    if experiment == "steer":
        settings = GenerationSettings.from_user(max_new_tokens=max_new_tokens, seed=seed)
        plain, steered = steered_pair(playground, prompt if isinstance(prompt, str) else "", settings, change.check(torch_model.config),
                                      model=source.name, owner=owner)
        return {"experiment": experiment, "model": source.name, "intervention": change.to_dict(), "seed": plain.settings.seed,
                "plain": {"text": plain.text, "run_id": plain.run_id}, "steered": {"text": steered.text, "run_id": steered.run_id}}
    ids = ids_of_run(playground, run_id, viewer) if run_id not in (None, "") else encode_prompt(codec, prompt)
    answer = {"experiment": experiment, "model": source.name, "tokens": [codec.label(i, ids[k - 1] if k else None)
                                                                        for k, i in enumerate(ids)]}
    if experiment == "rescore":
        return answer | rescore(torch_model, codec, ids, change.check(torch_model.config))
    goal = Target.of(codec, target, contrast)
    if experiment == "head_scan":
        if mode not in ("zero", "mean"):
            raise ExperimentError(key="experiments.bad_mode", field="mode", value=mode, modes="zero, mean")
        return answer | head_scan(torch_model, ids, goal, mode).to_dict()
    if kind not in PATCH_KINDS:
        raise ExperimentError(key="experiments.bad_kind", field="kind", value=kind, kinds=", ".join(PATCH_KINDS))
    corrupted_ids = encode_prompt(codec, corrupted, "corrupted")
    return answer | patch(torch_model, ids, corrupted_ids, goal, kind).to_dict()
