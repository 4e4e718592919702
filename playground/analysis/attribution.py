"""Which earlier tokens drove one prediction: gradient x input and integrated gradients (captum), PyTorch only."""

from __future__ import annotations

import threading

import torch

from ..errors import PlaygroundError

IG_STEPS = 16  # Gauss-Legendre points along the path: each is a forward and backward pass of the prefix
IG_BATCH = 8  # path points per forward pass: bounds the memory of a 128-token GPT-2-small pass with gradients
COMPLETENESS_RTOL = 0.05  # |sum of attributions - (f(x) - f(baseline))| <= this x |f(x) - f(baseline)| (+ 1e-4), checked in tests

_lock = threading.Lock()  # gradients on a shared model: one attribution at a time


def attribute(model, token_ids: list[int], target_id: int, steps: int = IG_STEPS) -> dict:
    """Attributions of the probability of `target_id` after `token_ids` to each input token's embedding.

    The function explained is f(e) = softmax(model(inputs_embeds=e))[-1, target]: the token embeddings
    vary, the position embeddings are the model's own. Integrated gradients go from an all-zero
    token embedding (the baseline) to the real one; per token, attributions are summed over the
    embedding's dimensions. `delta` is captum's completeness gap: sum(IG) - (f(x) - f(baseline)).
    """
    try:
        from captum.attr import InputXGradient, IntegratedGradients
    except ImportError as exc:  # captum is pinned in pyproject.toml; a trimmed install may lack it
        raise PlaygroundError(key="inside.no_captum", error=str(exc)) from None

    device = next(model.parameters()).device
    ids = torch.tensor([token_ids], device=device)  # (1, T)

    def prob_of_target(embeds: torch.Tensor) -> torch.Tensor:
        logits = model(inputs_embeds=embeds).logits[:, -1].float()  # (B, V)
        return torch.softmax(logits, dim=-1)[:, target_id]  # (B,)

    with _lock, torch.inference_mode(False), torch.enable_grad():
        embeds = model.transformer.wte(ids).detach().float()  # (1, T, d)
        baseline = torch.zeros_like(embeds)
        ig, delta = IntegratedGradients(prob_of_target).attribute(
            embeds, baselines=baseline, n_steps=steps, method="gausslegendre", internal_batch_size=IG_BATCH,
            return_convergence_delta=True)  # (1, T, d), (1,)
        gxi = InputXGradient(prob_of_target).attribute(embeds.clone().requires_grad_(True))  # (1, T, d)
        with torch.no_grad():
            output = float(prob_of_target(embeds)[0])
            base_output = float(prob_of_target(baseline)[0])
    return {
        "method": "captum IntegratedGradients (Gauss-Legendre) and InputXGradient on the token embeddings",
        "target_id": target_id,
        "integrated_gradients": ig[0].sum(-1).tolist(),  # (T,)
        "gradient_x_input": gxi[0].sum(-1).tolist(),  # (T,)
        "output": output,
        "baseline_output": base_output,
        "delta": float(delta[0]),
        "steps": steps,
    }
