"""Steering: a generation with a direction added to the residual stream, beside the same generation without it."""

from __future__ import annotations

from dataclasses import replace

from .intervention import ExperimentError, Intervention


def steered_pair(playground, prompt: str, settings, intervention: Intervention, model: str | None = None,
                 session: str | None = None, owner: str = ""):
    """Two runs of `prompt` with the same settings and seed: the model as it is, then with `intervention` (its
    steering direction, and any knock-outs). Both go through the one decoding loop and are saved; returns their
    results (plain, steered)."""
    if intervention.steer_layer is None and not intervention.ablates:
        raise ExperimentError(key="experiments.nothing_to_do", field="steer_layer")
    settings = settings.with_seed()  # one seed for both
    results = []
    for change in (None, intervention):
        run = playground.start(prompt, replace(settings), session=session, backend="torch", model=model, owner=owner,
                               intervention=change)
        for _ in playground.stream(run, session):
            pass
        results.append(run.result)
    return results[0], results[1]
