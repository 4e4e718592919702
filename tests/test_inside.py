"""Inside one prediction on real tiny models: logit lens, funnel, block, KV cache, attribution, ONNX hidden states, bad input."""

import shutil

import numpy as np
import pytest
import torch

from playground.analysis.attention import compute_attention
from playground.analysis.attribution import COMPLETENESS_RTOL
from playground.analysis.inside import Inside, InsideError, lens_grid, quantization_error, trace_run
from playground.config import GenerationSettings
from playground.errors import SettingsError
from playground.generation import generate
from playground.records import result_from_saved, saved_row
from playground.history import HistoryStore
from playground.service import Playground

PROMPT = "The value of the attribute is"
PROB_ATOL = 1e-5


def run_on(backend, source, **settings):
    return generate(backend, source, PROMPT, GenerationSettings(**({"max_new_tokens": 12, "seed": 7} | settings)))


@pytest.fixture(scope="module")
def sampled_run(tiny_backend, tiny_source):
    return run_on(tiny_backend, tiny_source, temperature=0.9, top_k=40, top_p=0.95)


@pytest.fixture(scope="module")
def inside(sampled_run, tiny_backend, tiny_source):
    return Inside(sampled_run, tiny_backend, tiny_backend.model, tiny_source.codec)


def positions(result):
    return [r.position for r in result.prompt_tokens[1:] + result.tokens]


def test_last_lens_layer_is_the_runs_raw_distribution(inside, sampled_run):
    records = sampled_run.prompt_tokens + sampled_run.tokens
    for position in positions(sampled_run):
        lens = inside.report(position)["logit_lens"]
        assert len(lens) == inside.reference.config.n_layer + 1 and lens[0]["name"] == "embeddings"
        last, record = lens[-1], records[position]
        assert abs(last["chosen_prob"] - record.raw_prob) < PROB_ATOL
        assert last["chosen_rank"] == record.rank
        for got, want in zip(last["top"], record.top):
            assert got["token_id"] == want.token_id and abs(got["prob"] - want.prob) < PROB_ATOL


@pytest.mark.parametrize("settings", [
    dict(do_sample=False),
    dict(top_k=1),
    dict(top_p=0.05, top_k=0),
    dict(temperature=2.0, top_k=0),
    dict(temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.3, typical_p=0.9),
    dict(do_sample=False, repetition_penalty=1.5, no_repeat_ngram_size=2),
], ids=["greedy", "top-k-1", "tiny-top-p", "temperature-2", "all-warpers", "greedy-penalties"])
def test_funnels_last_stage_is_the_recorded_prob(tiny_backend, tiny_source, settings):
    result = run_on(tiny_backend, tiny_source, **settings)
    view = Inside(result, tiny_backend, tiny_backend.model, tiny_source.codec)
    for record in result.tokens:
        stages = view.funnel(record.position)
        assert stages[0]["name"] == "logits" and stages[-1]["name"] == ("sampled" if result.settings.do_sample else "greedy")
        assert abs(stages[0]["chosen_prob"] - record.raw_prob) < PROB_ATOL
        assert abs(stages[-1]["chosen_prob"] - record.prob) < PROB_ATOL
        survivors = [s["survivors"] for s in stages]
        assert survivors == sorted(survivors, reverse=True)  # cuts only remove tokens
    names = [s["name"] for s in view.funnel(result.tokens[0].position)]
    if settings.get("top_k") == 1:
        assert names == ["logits", "top_k", "sampled"] and view.funnel(result.tokens[0].position)[-1]["survivors"] == 1
    if "repetition_penalty" in settings and settings.get("do_sample", True):
        assert names == ["logits", "repetition_penalty", "temperature", "top_k", "top_p", "typical_p", "sampled"]


def test_funnel_recomputes_from_the_runs_logits_with_other_settings(inside, sampled_run, tiny_backend):
    position = sampled_run.tokens[3].position
    logits = inside._logits
    hot = inside.funnel(position, temperature=3, top_k="", top_p=1)
    assert [s["name"] for s in hot] == ["logits", "temperature", "top_k", "sampled"]  # the run's top_k=40 stays
    cut = inside.funnel(position, temperature="0.5", top_k=2, top_p="0.5")
    assert cut[-1]["survivors"] <= 2 and cut[2]["survivors"] == 2
    assert inside._logits is logits  # no new forward pass: the one pass over the run is reused
    # ... and its row is what a pass over the tokens before the position gives.
    ids = [t.token_id for t in sampled_run.prompt_tokens + sampled_run.tokens]
    fresh, _ = tiny_backend.prefill(ids[:position])
    assert torch.allclose(inside.logits_at(position)[0], fresh[-1], atol=1e-4)


@pytest.mark.parametrize("top_k, top_p", [(3, 1.0), (1, 1.0), (0, 0.05), (2, 0.5)])
def test_funnel_tops_list_only_the_survivors(inside, sampled_run, top_k, top_p):
    """Fewer tokens than the list's length left after a cut: the stage lists those, never zero-probability filler."""
    for record in sampled_run.tokens[:4]:
        stages = inside.funnel(record.position, temperature=1.0, top_k=top_k, top_p=top_p)
        for stage in stages:
            assert len(stage["top"]) == min(10, stage["survivors"])
            assert all(a["prob"] > 0 for a in stage["top"]), stage
            assert [a["prob"] for a in stage["top"]] == sorted((a["prob"] for a in stage["top"]), reverse=True)
        assert stages[-1]["survivors"] <= (top_k or 10**9)
    if top_k == 1:
        assert len(stages[-1]["top"]) == 1 and stages[-1]["top"][0]["prob"] == pytest.approx(1.0)
    from playground.ui.inside_html import funnel_table

    rows = funnel_table({"funnel": stages}, inside.codec, "zh-CN").split("<tr>")[2:]  # after the header row
    assert [row.count("<code>") for row in rows] == [min(5, s["survivors"]) for s in stages]


def test_attention_row_equals_the_attention_tabs(inside, sampled_run, tiny_backend, tiny_source):
    ids = [t.token_id for t in sampled_run.prompt_tokens + sampled_run.tokens]
    tab = compute_attention(tiny_backend, ids, tiny_source.codec)
    config = tiny_backend.model.config
    for position in (1, len(ids) // 2, len(ids) - 1):
        for layer in range(config.n_layer):
            for head in range(config.n_head):
                block = inside.block(position, layer, head)
                assert np.allclose(block["weights"], tab.weights[layer, head, position - 1], atol=1e-6)
                assert all(w == 0 for w, visible in zip(block["weights"], block["mask"]) if not visible)
                assert np.isneginf(block["scores"][position]) is np.False_  # raw scores are shown unmasked
    assert len(block["mlp_activations"]) == 4 * config.n_embd and len(block["mlp_top"]) == 10


def test_residual_adds_up_and_kv_cache_is_measured(inside, sampled_run):
    position = sampled_run.tokens[2].position
    report = inside.report(position, layer=1, head=0)
    config = inside.reference.config
    residual = report["residual"]
    assert len(residual) == config.n_layer + 1 and residual[0]["added_norm"] is None
    for row in residual[1:]:
        assert row["attention_norm"] > 0 and row["mlp_norm"] > 0 and -1 <= row["cosine_previous"] <= 1
        # The block's addition is attention + MLP: its norm is at most the sum of theirs.
        assert row["added_norm"] <= row["attention_norm"] + row["mlp_norm"] + 1e-3
    head_dim = config.n_embd // config.n_head
    kv = report["kv_cache"]
    assert [layer["key_shape"] for layer in kv["layers"]] == [[1, config.n_head, position, head_dim]] * config.n_layer
    assert kv["total_bytes"] == config.n_layer * 2 * config.n_head * position * head_dim * 4  # fp32
    emb = report["embedding"]
    assert emb["token_id"] == (sampled_run.prompt_tokens + sampled_run.tokens)[position - 1].token_id
    assert emb["position_index"] == position - 1 and len(emb["wte_first"]) == 16
    assert emb["sum_norm"] == pytest.approx(float(np.linalg.norm(np.add(inside.head.wte[emb["token_id"]], inside.head.wpe[position - 1]))), rel=1e-5)


def test_lens_grid_in_chunks_equals_the_per_position_lens(inside, sampled_run):
    small = lens_grid(inside.trace, inside.head, k=3, chunk_rows=5)
    big = lens_grid(inside.trace, inside.head, k=3, chunk_rows=10_000)
    assert np.allclose(small.chosen_prob, big.chosen_prob, atol=1e-7) and np.array_equal(small.top_ids, big.top_ids)
    position = sampled_run.tokens[0].position
    lens = inside.report(position)["logit_lens"]
    assert np.allclose(small.chosen_prob[:, position - 1], [layer["chosen_prob"] for layer in lens], atol=1e-6)
    assert list(small.chosen_rank[:, position - 1]) == [layer["chosen_rank"] for layer in lens]


def test_integrated_gradients_are_complete(inside, sampled_run):
    position = sampled_run.tokens[1].position
    result = inside.attribution(position)
    assert len(result["integrated_gradients"]) == position == len(result["gradient_x_input"])
    change = result["output"] - result["baseline_output"]
    total = sum(result["integrated_gradients"])
    assert abs(total - change) <= COMPLETENESS_RTOL * abs(change) + 1e-4, (total, change)
    assert result["delta"] == pytest.approx(total - change, abs=1e-5)


def test_onnx_fp32_hidden_states_equal_pytorchs_and_quantization_drifts(tiny_backend, tiny_source, sampled_run, tiny_exports_root):
    from playground.backends.onnx import OnnxBackend

    ids = [t.token_id for t in sampled_run.prompt_tokens + sampled_run.tokens]
    reference = trace_run(tiny_backend, ids).hidden
    fp32 = OnnxBackend(tiny_source, "fp32", device="cpu", exports_root=tiny_exports_root, progress=False)
    assert np.abs(fp32.hidden_states(ids) - reference).max() < 1e-4
    int8 = OnnxBackend(tiny_source, "int8", device="cpu", exports_root=tiny_exports_root, progress=False)
    view = Inside(sampled_run, int8, tiny_backend.model, tiny_source.codec)
    rows = quantization_error(view.trace.hidden, reference, view.head)
    assert all(1e-4 < row["relative_error"] < 0.5 for row in rows)  # int8 quantizes the embeddings too: error from layer 0
    assert all(0 <= row["top1_agreement"] <= 1 for row in rows)
    report = view.report(sampled_run.tokens[0].position)
    assert report["backend"] == "onnx" and report["variant"] == "int8" and report["block"]["scores"] is None
    assert np.allclose(np.sum(report["block"]["weights"]), 1.0, atol=1e-4) and report["residual"][1]["attention_norm"] is None
    config, position = tiny_backend.model.config, sampled_run.tokens[0].position  # the in-place int8 cache: 1 byte a number
    assert report["kv_cache"]["total_bytes"] == config.n_layer * 2 * config.n_embd * position * 1
    # The view computes the run's logits as the run did (its prompt in one pass by prompt.onnx, each generated token by a
    # decoding step): no notice, and the funnel's raw distribution is that run's, for a prompt token and a generated one.
    assert not any("int8" in n for n in report["notices"])
    run = generate(int8, tiny_source, "The value of", GenerationSettings(max_new_tokens=4, seed=5))
    funnel = Inside(run, int8, tiny_backend.model, tiny_source.codec).report(run.tokens[2].position)["funnel"]
    assert abs(funnel[0]["chosen_prob"] - run.tokens[2].raw_prob) < 1e-6
    funnel = Inside(run, int8, tiny_backend.model, tiny_source.codec).report(run.prompt_tokens[-1].position)["funnel"]
    assert abs(funnel[0]["chosen_prob"] - run.prompt_tokens[-1].raw_prob) < 1e-6
    with pytest.raises(InsideError, match="only the PyTorch backend"):
        view.attribution(sampled_run.tokens[0].position)


@pytest.mark.parametrize("position, match", [
    (0, "Position 0 is the run's first token"),
    (999, "is not in this run"),
    (-1, "is not in this run"),
    ("three", "position must be a whole number"),
    (None, "position must be a whole number"),
])
def test_bad_positions_are_clear_errors(inside, position, match):
    with pytest.raises((InsideError, SettingsError), match=match) as caught:
        inside.report(position)
    assert caught.value.key


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature="hot"), "temperature must be a number"),
    (dict(temperature=0), "temperature=0.0 is out of range"),
    (dict(top_k=1.5), "top_k must be a whole number"),
    (dict(top_p=float("nan")), "top_p must be a finite number"),
    (dict(layer=9), "Layer 9 does not exist"),
    (dict(head="x"), "head must be a whole number"),
    (dict(head=5), "Head 5 does not exist"),
])
def test_bad_settings_are_clear_errors(inside, sampled_run, kwargs, match):
    with pytest.raises((InsideError, SettingsError), match=match):
        inside.report(sampled_run.tokens[0].position, **kwargs)


def test_a_run_longer_than_the_window_is_cut_and_says_so(sampled_run, tiny_backend, tiny_source):
    view = Inside(sampled_run, tiny_backend, tiny_backend.model, tiny_source.codec, cap=8)
    length = len(sampled_run.prompt_tokens) + len(sampled_run.tokens)
    report = view.report(length - 1)
    assert report["window"] == {"first_position": length - 8, "tokens": 8} and "last 8" in report["notices"][0]
    assert view.notices[0].key == "inside.window"
    with pytest.raises(InsideError, match="before the analysed window"):
        view.report(length - 8)


def test_a_saved_run_whose_model_changed_or_went_is_refused(tiny_model_dir, tiny_source, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_model_dir, root / "copy")
    playground = Playground(tiny_source, device="cpu", history=HistoryStore(tmp_path / "h.db"), models_root=root)
    run = playground.start(PROMPT, GenerationSettings(max_new_tokens=4, seed=1), model="copy")
    for _ in playground.stream(run):
        pass
    saved = playground.history.get(run.result.run_id)
    assert saved["model_sha256"] == playground.model_fingerprint("copy") and "model_sha256" not in saved["metrics"]
    reopened = result_from_saved(saved)
    assert playground.inside(reopened).report(reopened.tokens[0].position)["notices"] == []  # same weights: fine
    config = root / "copy" / "config.json"
    config.write_text(config.read_text().replace('"n_positions"', '"changed": 1, "n_positions"'))
    reopened.tokens = reopened.tokens[:-1]  # another run key, so the view is built again
    with pytest.raises(InsideError, match="has changed since this run was made") as caught:
        playground.inside(reopened)
    assert caught.value.key == "inside.model_changed"
    shutil.rmtree(root / "copy")
    with pytest.raises(InsideError, match="not available any more"):
        playground.inside(reopened)


def test_runs_saved_without_a_fingerprint_get_a_notice(tiny_source, tiny_backend, tmp_path):
    store = HistoryStore(tmp_path / "h.db")
    result = run_on(tiny_backend, tiny_source, max_new_tokens=3)
    result.run_id = store.save_run(saved_row(result, "complete"))  # as runs were saved before fingerprints
    playground = Playground(tiny_source, device="cpu", history=store)
    report = playground.inside(result_from_saved(store.get(result.run_id))).report(3)
    assert any("without a fingerprint" in n for n in report["notices"])


def test_chinese_bert_tokenizer_models_work(tiny_zh_bin_dir):
    from playground.backends.torch import TorchBackend
    from playground.models import resolve_model

    source = resolve_model(str(tiny_zh_bin_dir))
    backend = TorchBackend(source, device="cpu")
    result = generate(backend, source, "春风又绿江南岸", GenerationSettings(max_new_tokens=6, seed=2))
    view = Inside(result, backend, backend.model, source.codec)
    position = result.tokens[0].position
    report = view.report(position)
    assert report["embedding"]["text"] == result.prompt_tokens[-1].text  # 岸, read last
    assert abs(report["logit_lens"][-1]["chosen_prob"] - result.tokens[0].raw_prob) < PROB_ATOL
    assert report["funnel"][-1]["chosen_prob"] == pytest.approx(result.tokens[0].prob, abs=PROB_ATOL)
    assert torch.tensor(view.report(1)["embedding"]["wte_first"]).shape == (16,)  # [CLS] read first


# --- the /inside endpoint of a launched app, through gradio_client ----------------------------------------------------


@pytest.fixture(scope="module")
def client(launched_app):
    from gradio_client import Client

    return Client(launched_app, verbose=False)


def test_inside_api_answers_with_the_tabs_numbers(client):
    _, run = client.predict(prompt="The value of", max_new_tokens=8, seed=7, temperature=0.8, top_k=30, api_name="/generate")
    position = run["tokens"][2]["position"]
    report = client.predict(run_id=run["run_id"], position=position, layer=1, head=1, api_name="/inside")
    assert report["backend"] == "torch" and report["variant"] == "fp32" and report["position"] == position
    lens = report["logit_lens"]
    assert lens[0]["name"] == "embeddings" and {"chosen_prob", "chosen_rank", "top"} <= lens[0].keys()
    assert abs(lens[-1]["chosen_prob"] - run["tokens"][2]["raw_prob"]) < PROB_ATOL
    assert [s["name"] for s in report["funnel"]] == ["logits", "temperature", "top_k", "sampled"]
    assert abs(report["funnel"][-1]["chosen_prob"] - run["tokens"][2]["prob"]) < PROB_ATOL
    assert report["block"]["layer"] == 1 and report["kv_cache"]["total_bytes"] > 0 and len(report["residual"]) == 3
    greedy = client.predict(run_id=run["run_id"], position=position, top_k=1, attribution=True, api_name="/inside")
    assert greedy["funnel"][-1]["survivors"] == 1 and len(greedy["attribution"]["integrated_gradients"]) == position


@pytest.mark.parametrize("bad, message", [
    (dict(position=0), "Position 0 is the run's first token"),
    (dict(position=10_000), "is not in this run"),
    (dict(position="x"), "position must be a whole number"),
    (dict(temperature="warm"), "temperature must be a number"),
    (dict(run_id=987654), "Run 987654 is not in the history"),
])
def test_inside_api_bad_input_is_a_clear_error(client, bad, message):
    from gradio_client.exceptions import AppError

    _, run = client.predict(prompt="An object", max_new_tokens=3, seed=1, api_name="/generate")
    with pytest.raises(AppError, match=message):
        client.predict(**({"run_id": run["run_id"], "position": 3} | bad), api_name="/inside")
