"""Contrastive search in the one decoding loop, on a real tiny GPT-2: the tokens a direct computation of the published
score picks (full forward passes, no cache), on PyTorch and ONNX fp32, beside another run in the batch; bad inputs."""

import numpy as np
import pytest
import torch

from playground.backends.onnx import OnnxBackend
from playground.backends.remote import RemoteEngine
from playground.config import GenerationSettings
from playground.decoding.contrastive import degeneration_penalty
from playground.errors import SettingsError
from playground.generation import Generation
from playground.locales import text


@pytest.fixture(scope="module")
def backends(tiny_backend, tiny_source, tiny_exports_root):
    root = tiny_exports_root
    return {"torch": tiny_backend, "fp32": OnnxBackend(tiny_source, "fp32", device="cpu", exports_root=root, progress=False)}


@torch.inference_mode()
def direct(model, ids: list[int], alpha: float, k: int, steps: int) -> list[int]:
    """Su et al.'s rule, computed the long way: each candidate's hidden state from its own whole forward pass."""
    ids, chosen = list(ids), []
    for _ in range(steps):
        context = model.transformer(torch.tensor([ids])).last_hidden_state[0]  # (T, E), after the final layer norm
        probs, candidates = torch.softmax(model.lm_head(context[-1]), dim=-1).topk(k)  # (k,)
        hidden = torch.stack([model.transformer(torch.tensor([ids + [c]])).last_hidden_state[0, -1]
                              for c in candidates.tolist()])  # (k, E)
        cosine = torch.nn.functional.cosine_similarity(hidden[:, None], context[None], dim=-1)  # (k, T)
        score = (1 - alpha) * probs - alpha * cosine.max(dim=1).values
        chosen.append(candidates[int(score.argmax())].item())
        ids.append(chosen[-1])
    return chosen


def test_the_degeneration_penalty_is_the_largest_cosine_similarity():
    context = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    candidates = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, -1.0]], dtype=np.float32)
    assert degeneration_penalty(candidates, context) == pytest.approx([1.0, 2 ** -0.5, 0.0], abs=1e-6)


@pytest.mark.parametrize("name", ["torch", "fp32"])
def test_contrastive_search_picks_what_the_direct_computation_picks(backends, tiny_source, tiny_model_dir, name):
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()
    settings = GenerationSettings(do_sample=False, penalty_alpha=0.6, top_k=4, max_new_tokens=8)
    # Beside it in the batch, a sampled run: the contrastive run's rows are copied and reordered, the other's kept.
    run = Generation(backends[name], tiny_source, "The value of the", settings)
    other = Generation(backends[name], tiny_source, "It is", GenerationSettings(max_new_tokens=12, seed=3))
    streams = [iter(other.samples()), iter(run.samples())]
    while streams:
        for stream in list(streams):
            if next(stream, None) is None:
                streams.remove(stream)
    prompt_ids = [r.token_id for r in run.result.prompt_tokens]
    got = [r.token_id for r in run.result.tokens]
    assert got == direct(model, prompt_ids, 0.6, 4, 8)
    assert run.result.finish_reason == "length" and len(other.result.tokens) == 12
    # Its records are the model's: the chosen token's probability among the alternatives of its own distribution.
    for record in run.result.tokens:
        assert record.rank <= 4 and record.prob == pytest.approx(record.raw_prob, abs=1e-5)
    if name != "torch":
        return
    # alpha -> 0 is greedy, and alpha 0.6 is not here
    greedy = Generation(backends[name], tiny_source, "The value of the", GenerationSettings(do_sample=False, max_new_tokens=8))
    list(greedy.samples())
    almost = Generation(backends[name], tiny_source, "The value of the",
                        GenerationSettings(do_sample=False, penalty_alpha=1e-9, top_k=4, max_new_tokens=8))
    list(almost.samples())
    assert [r.token_id for r in almost.result.tokens] == [r.token_id for r in greedy.result.tokens]
    assert got != [r.token_id for r in greedy.result.tokens]  # the penalty changed the choice somewhere


@pytest.mark.parametrize("values, key", [
    (dict(penalty_alpha=0.5, do_sample=True), "contrastive.do_sample"),
    (dict(penalty_alpha=0.5, do_sample=False, top_k=1), "contrastive.top_k"),
    (dict(penalty_alpha=0.5, do_sample=False, top_k=40), "contrastive.top_k"),
    (dict(penalty_alpha=0.5, do_sample=False, num_beams=2), "contrastive.with_beams"),
])
def test_bad_contrastive_settings_say_what_is_allowed(values, key):
    with pytest.raises(SettingsError) as caught:
        GenerationSettings.from_user(max_new_tokens=8, **values)
    assert caught.value.key == key and "{" not in text(key, "zh-CN", **caught.value.params)


def test_contrastive_search_with_a_backend_without_hidden_states_names_those_with(tiny_source):
    engine = RemoteEngine(tiny_source, "http://127.0.0.1:9", model="any")
    with pytest.raises(SettingsError) as caught:
        Generation(engine, tiny_source, "A", GenerationSettings(penalty_alpha=0.5, do_sample=False, top_k=4, max_new_tokens=8))
    assert caught.value.key == "contrastive.no_hidden" and "PyTorch" in str(caught.value)
    assert "PyTorch" in text("contrastive.no_hidden", "zh-CN", **caught.value.params)
