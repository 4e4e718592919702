"""The ONNX backend on a real tiny GPT-2: parity with PyTorch, quantized variants, export integrity, providers."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from playground.backends.onnx import OnnxBackend, resolve_onnx_device
from playground.onnx.runtime import CPU, OnnxRunner
from playground.config import GenerationSettings
from playground.errors import DeviceError
from playground.onnx.export import MANIFEST, MODEL_FILE, PROBE_TEXT, ensure_export, export_folder
from playground.generation import generate

LOGIT_ATOL = 1e-4  # fp32 ONNX vs PyTorch eager on the CPU: same maths, different kernels
PROMPT = "The value of the attribute is"


@pytest.fixture(scope="module")
def exports_root(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def onnx_backends(tiny_source, exports_root):
    return {v: OnnxBackend(tiny_source, v, device="cpu", exports_root=exports_root, progress=False) for v in ("fp32", "int8", "int4")}


def test_fp32_logits_match_pytorch_for_prompt_and_steps(tiny_backend, tiny_source, onnx_backends):
    onnx = onnx_backends["fp32"]
    ids = tiny_source.tokenizer(PROMPT)["input_ids"]
    t_logits, t_cache = tiny_backend.prefill(ids)
    o_logits, o_cache = onnx.prefill(ids)
    assert torch.allclose(t_logits, o_logits, atol=LOGIT_ATOL)
    token = int(t_logits[-1].argmax())
    for _ in range(25):
        t_logits, t_cache = tiny_backend.step(token, t_cache)
        o_logits, o_cache = onnx.step(token, o_cache)
        assert torch.allclose(t_logits, o_logits, atol=LOGIT_ATOL), float((t_logits - o_logits).abs().max())
        token = int(t_logits.argmax())


def test_greedy_and_seeded_sampling_are_identical(tiny_backend, tiny_source, onnx_backends):
    for settings in (GenerationSettings(max_new_tokens=30, do_sample=False),
                     GenerationSettings(max_new_tokens=30, seed=17, temperature=0.9, top_p=0.95)):
        a = generate(tiny_backend, tiny_source, PROMPT, settings)
        b = generate(onnx_backends["fp32"], tiny_source, PROMPT, settings)
        assert [t.token_id for t in a.tokens] == [t.token_id for t in b.tokens]
        assert a.text == b.text
        assert b.info.backend == "onnx" and b.info.provider == CPU


def top1_agreement(backend, reference, tokenizer) -> float:
    ids = tokenizer(PROBE_TEXT * 2)["input_ids"][: reference.info.context_length]
    got, _ = backend.prefill(ids)
    want, _ = reference.prefill(ids)
    return float((got.argmax(-1) == want.argmax(-1)).float().mean())


# Top-1 agreement with PyTorch fp32 on the probe text, measured: tiny test model int8 1.0, int4 1.0;
# demo model int8 0.941 (embeddings quantized too), int4 0.941 (34 positions). The floors leave room for quantization drift
# (GPT-2 int8 is known to drift) while still catching a broken variant, which agrees at chance (~0).
@pytest.mark.parametrize("variant, floor", [("int8", 0.9), ("int4", 0.85)])
def test_quantized_variants_mostly_agree_with_fp32(tiny_backend, tiny_source, onnx_backends, variant, floor):
    assert top1_agreement(onnx_backends[variant], tiny_backend, tiny_source.tokenizer) >= floor


def test_manifests_say_what_was_quantized_and_keep_the_tie(onnx_backends, tiny_backend):
    n_layer = tiny_backend.model.config.n_layer
    fp32 = onnx_backends["fp32"].manifest
    assert fp32["lm_head_tied"] is True and fp32["weights"]["quantized_matmuls"] == 0
    assert fp32["verification"]["max_abs_logit_diff"] < 1e-3
    for variant in ("int8", "int4"):
        manifest = onnx_backends[variant].manifest
        # Every weight matrix: 4 per block (qkv, attention out, MLP in, MLP out) plus lm_head.
        assert manifest["weights"]["quantized_matmuls"] == 4 * n_layer + 1
        assert manifest["weights"].get("ops", {}).get("Gemm", 0) == 0
        assert manifest["size_mb"] < fp32["size_mb"]
        assert set(manifest["versions"]) >= {"torch", "transformers", "optimum", "onnxruntime-gpu"}
    # int4's token embedding reads lm_head's quantized weight (one copy on disk), so no fp32 wte is left; int8's is its
    # own fp16 table (export.py NBITS_RECIPES); the position embedding stays fp32 (as llama.cpp keeps it).
    for variant in ("int8", "int4"):
        manifest = onnx_backends[variant].manifest
        assert manifest["weights"]["ops"]["MatMulNBits"] == 4 * n_layer + 1
    int4, int8 = onnx_backends["int4"].manifest, onnx_backends["int8"].manifest
    assert int4["weights"]["ops"]["GatherBlockQuantized"] == 1 and int4["lm_head_tied"] is True
    assert int4["weights"]["quantized_weight_fraction"] > 0.9
    assert "GatherBlockQuantized" not in int8["weights"]["ops"] and int8["lm_head_tied"] is False
    assert 0.5 < int8["weights"]["quantized_weight_fraction"] < 0.9  # the fp16 embedding counts as float
    assert onnx_backends["int4"].manifest["size_mb"] < onnx_backends["int8"].manifest["size_mb"]


def test_the_token_embedding_is_the_models_within_its_precision(onnx_backends, tiny_backend):
    """int8's token embedding is its own fp16 table (export.py half_embedding), read by a Gather and cast back; int4's
    is lm_head's quantized weight (share_embedding_with_lm_head): its GatherBlockQuantized node, run alone over the
    export's own initializers, gives each token's embedding within a quantization step of PyTorch's."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    wte = tiny_backend.model.transformer.wte.weight.detach().numpy()
    int8 = onnx.load(str(onnx_backends["int8"].model_path))
    gather = next(n for n in int8.graph.node if n.op_type == "Gather" and n.input[0].endswith("_fp16"))
    table = numpy_helper.to_array(next(i for i in int8.graph.initializer if i.name == gather.input[0]))
    assert table.dtype == np.float16 and np.array_equal(table, wte.astype(np.float16))
    assert any(n.op_type == "Cast" and n.input[0] == gather.output[0] for n in int8.graph.node)

    model = onnx.load(str(onnx_backends["int4"].model_path))
    gather = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    views = [n for n in model.graph.node if n.name.startswith("wte_q_") and n.op_type == "Reshape"]
    read = {name for n in (*views, gather) for name in n.input}
    attributes = {a.name: helper.get_attribute_value(a) for a in gather.attribute}
    graph = helper.make_graph([*views, helper.make_node(gather.op_type, [gather.input[0], "ids", *gather.input[2:]], ["rows"],
                                                        domain=gather.domain, **attributes)],
                              "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, None)],
                              [i for i in model.graph.initializer if i.name in read])
    alone = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    ids = np.arange(0, tiny_backend.model.config.vocab_size, 7, dtype=np.int64)
    got = ort.InferenceSession(alone.SerializeToString(), providers=[CPU]).run(None, {"ids": ids})[0]
    want = wte[ids]
    block = attributes["block_size"]
    scales_view = next(n for n in views if n.name == "wte_q_scales_view")
    scales = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == scales_view.input[0]))  # lm_head's
    steps = np.abs(scales.reshape(-1, want.shape[1] // block)[ids])  # (ids, blocks): each block's step
    errors = np.abs(got - want).reshape(len(ids), -1, block)
    # onnxruntime's symmetric blocks map each block's largest magnitude to -2^(bits-1), so a value of the other sign as
    # large saturates at 2^(bits-1) - 1: one step off at most, half a step for the rest.
    assert np.all(errors <= steps[..., None] + 1e-6) and np.mean(errors <= steps[..., None] * 0.5 + 1e-6) > 0.95
    assert errors.max() > 0


@pytest.mark.parametrize("variant", ["fp32", "int8", "int4"])
def test_decoder_attention_is_fused_and_the_analysis_graph_is_not(onnx_backends, tiny_backend, variant):
    """Each layer's ~70 attention nodes become one MultiHeadAttention node (onnx/fusion.py), or over the quantized
    variants' int8 cache one GroupQueryAttention node; the analysis graph keeps eager attention, whose probabilities are
    its outputs. Fusing again finds nothing left to fuse."""
    import onnx

    from playground.onnx.export import ATTENTION_FILE, INT8_KV_CACHE_VARIANTS
    from playground.onnx.fusion import drop_linear_reshapes, fuse_attention, op_counts

    n_layer = tiny_backend.model.config.n_layer
    backend = onnx_backends[variant]
    int8_cache = variant in INT8_KV_CACHE_VARIANTS
    attention, cache, dtype = ("GroupQueryAttention", onnx.TensorProto.INT8, np.int8) if int8_cache else (
        "MultiHeadAttention", onnx.TensorProto.FLOAT, np.float32)
    assert backend.manifest["weights"]["ops"][attention] == n_layer
    decoder = onnx.load(str(backend.model_path))
    ops = Counter(node.op_type for node in decoder.graph.node if not node.name.startswith("stats/"))  # onnx/stats.py's own
    assert ops[attention] == n_layer and ops["Softmax"] == 0
    assert {i.type.tensor_type.elem_type for i in decoder.graph.input if i.name.startswith("past_key_values.")} == {
        cache} and backend.runner.past_dtype == dtype
    assert not [n for n in decoder.graph.node if n.op_type == "Concat" and n.input[0].startswith("past_key_values.")]
    # No shape arithmetic left per layer (optimum's graph: ~150 such nodes per layer).
    shape_ops = sum(ops[op] for op in ("Shape", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Slice", "Concat", "Gather"))
    assert shape_ops <= 20 + 5 * int8_cache, ops  # a fixed few: position ids, the cache length, the token embedding
    assert fuse_attention(decoder) == 0 and drop_linear_reshapes(decoder) == 0
    analysis = onnx.load(str(backend.model_path.parent / ATTENTION_FILE))
    assert op_counts(analysis)["MultiHeadAttention"] == 0 and op_counts(analysis)["Softmax"] == n_layer
    assert fuse_attention(analysis) == 0


def _rebuilt(tiny_source, exports_root, variant="fp32"):
    path, manifest = ensure_export(tiny_source, variant, exports_root, progress=False)
    runner = OnnxRunner(path, [CPU])
    logits, _ = runner.prefill([1, 2, 3])
    assert torch.isfinite(logits).all()
    return manifest


@pytest.mark.parametrize("damage", ["truncate", "delete", "manifest-source", "manifest-garbage"])
def test_corrupt_or_stale_exports_are_rebuilt_not_loaded(tiny_source, exports_root, onnx_backends, damage):
    folder = export_folder(tiny_source, "fp32", exports_root)
    model = folder / MODEL_FILE
    if damage == "truncate":
        data = model.read_bytes()
        model.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        model.unlink()
    elif damage == "manifest-source":
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["source"]["sha256"] = "0" * 64  # as if built from other weights
        (folder / MANIFEST).write_text(json.dumps(manifest))
    else:
        (folder / MANIFEST).write_text("{not json")
    before = (folder / MANIFEST).stat().st_mtime_ns if (folder / MANIFEST).exists() else 0
    manifest = _rebuilt(tiny_source, exports_root)
    assert (folder / MANIFEST).stat().st_mtime_ns != before
    assert manifest["files"][MODEL_FILE]["bytes"] == model.stat().st_size


def test_matching_export_is_reused(tiny_source, exports_root, onnx_backends):
    folder = export_folder(tiny_source, "int8", exports_root)
    before = (folder / MANIFEST).stat().st_mtime_ns
    ensure_export(tiny_source, "int8", exports_root, progress=False)
    assert (folder / MANIFEST).stat().st_mtime_ns == before


def test_no_leftover_temporary_folders(tiny_source, exports_root, onnx_backends):
    parent = export_folder(tiny_source, "fp32", exports_root).parent
    assert sorted(p.name for p in parent.iterdir()) == ["fp32", "int4", "int8"]


def test_cuda_request_falls_back_to_cpu_with_a_note(tiny_source, exports_root, onnx_backends):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert resolve_onnx_device("cuda")[0] == "cpu"
    backend = OnnxBackend(tiny_source, "fp32", device="cuda", exports_root=exports_root, progress=False)
    assert backend.info.provider == CPU and "running on the CPU" in backend.info.notice


def test_fp16_without_a_gpu_is_refused_naming_what_would_run(tiny_source, exports_root):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceError, match="needs a GPU.*Use one of: fp32, int8, int4"):
        OnnxBackend(tiny_source, "fp16", device="auto", exports_root=exports_root, progress=False)


def test_in_place_cache_matches_optimums_graph_step_by_step_and_in_batches(onnx_backends, tiny_source, tmp_path):
    """The export's cache is written in place (fixed buffers bound as past and present); optimum's graph returns a new,
    longer cache each step (the fp16 path still runs it). Same logits, one row or a batch with a row dropped."""
    from playground.models import load_torch_model
    from playground.onnx.export import _export_fp32, _make_variant

    fused = onnx_backends["fp32"].runner
    raw = _export_fp32(load_torch_model(tiny_source), tmp_path / "raw")
    _make_variant(raw, "fp32", tmp_path / "unfused.onnx", fuse=False)
    plain = OnnxRunner(tmp_path / "unfused.onnx", [CPU])
    assert fused.in_place and not plain.in_place and not plain.io_binding
    ids = tiny_source.tokenizer(PROMPT)["input_ids"]
    (a, ca), (b, cb) = plain.prefill(ids), fused.prefill(ids)
    buffers = [value.array for value in cb[0]]
    assert buffers[0].shape[2] == fused.context  # (1, H, context, D)
    for array in buffers:  # positions past the cache's length are never read: poison them
        array[:, :, len(ids):] = np.nan
    for token in (5, 9, 11, 3):
        assert np.allclose(a.numpy(), b.numpy(), atol=1e-5)
        (a, ca), (b, cb) = plain.step(token, ca), fused.step(token, cb)
    assert np.allclose(a.numpy(), b.numpy(), atol=1e-5)
    assert all(value.array is array for value, array in zip(cb[0], buffers))  # the same memory, step after step
    assert np.isnan(buffers[0][:, :, len(ids) + 4:]).all() and np.isfinite(buffers[0][:, :, :len(ids) + 4]).all()
    # A batch of 3 from the prompt's cache, then row 1 leaves: both graphs agree row by row.
    ca, cb = plain.expand(ca, 3), fused.expand(cb, 3)
    (a, ca), (b, cb) = plain.step_batch([1, 2, 3], ca), fused.step_batch([1, 2, 3], cb)
    assert np.allclose(a.numpy(), b.numpy(), atol=1e-5)
    ca, cb = plain.select(ca, [0, 2]), fused.select(cb, [0, 2])
    (a, ca), (b, cb) = plain.step_batch([4, 6], ca), fused.step_batch([4, 6], cb)
    assert a.shape == b.shape == (2, a.shape[-1]) and np.allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_an_int8_kv_cache_holds_the_keys_and_values_at_its_scales_and_decodes_as_the_fp32_cache_does(onnx_backends, tiny_source,
                                                                                                  tmp_path):
    """The int8 KV cache (onnx/fusion.py's GroupQueryAttention path, the int8 and int4 variants': INT8_KV_CACHE_VARIANTS)
    on int8 weights: its buffers hold round(x / scale) of the fp32 cache's keys and values, it decodes step by step and in
    a left-padded batch as the same weights with an fp32 cache do, and each row of a batch gets what it gets alone. Both
    graphs here run prompts themselves (no prompt.onnx beside them); tests/test_prompt_graph.py has the export's."""
    from playground.analysis.inside import kv_cache_report
    from playground.models import load_torch_model
    from playground.onnx.export import INT8_KV_CACHE_VARIANTS, _export_fp32, _make_variant, kv_cache_scales

    assert INT8_KV_CACHE_VARIANTS == ("int8", "int4")  # on CUDA int4 is loaded with an fp32 cache (the next test)
    model = load_torch_model(tiny_source)
    scales = kv_cache_scales(tiny_source, model)
    raw = _export_fp32(model, tmp_path / "raw")
    _make_variant(raw, "int8", tmp_path / "kv8.onnx", kv_scales=scales)
    _make_variant(raw, "int8", tmp_path / "fp.onnx")
    kv8, fp = OnnxRunner(tmp_path / "kv8.onnx", [CPU]), OnnxRunner(tmp_path / "fp.onnx", [CPU])
    assert kv8.in_place and kv8.past_dtype == np.int8 and fp.past_dtype == np.float32
    ids = tiny_source.tokenizer(PROMPT)["input_ids"]
    (a, ca), (b, cb) = fp.prefill(ids), kv8.prefill(ids)
    for layer, (key, value) in enumerate(scales):  # (H, D) each
        for buffer, held, scale in ((ca.past[2 * layer], cb.past[2 * layer], key), (ca.past[2 * layer + 1], cb.past[2 * layer + 1], value)):
            want, got = buffer.array[0, :, :len(ids)], held.array[0, :, :len(ids)].astype(np.float32)  # (H, T, D)
            steps = np.abs(got * scale[:, None, :] - want) / scale[:, None, :]  # |error| in steps of the scale
            # Layer 0's keys and values are the same numbers in both graphs: rounded, half a step at most. A later
            # layer's differ by what the cache's rounding changed before it (up to 1.4 steps measured on this model).
            assert steps.max() <= (0.5001 if layer == 0 else 4)
    assert kv_cache_report(cb, len(ids))["total_bytes"] * 4 == kv_cache_report(ca, len(ids))["total_bytes"]

    def close(x, y):  # the same distribution, up to the cache's rounding
        p, q = torch.softmax(x.float(), -1), torch.softmax(y.float(), -1)
        return (p - q).abs().max() < 0.02 and torch.equal(p.argmax(-1), q.argmax(-1))

    for token in (5, 9, 11, 3):
        assert close(a, b)
        (a, ca), (b, cb) = fp.step(token, ca), kv8.step(token, cb)
    assert close(a, b)
    short = tiny_source.tokenizer("The")["input_ids"]
    (batch, cache), alone = kv8.prefill_batch([ids, short]), kv8.prefill(short)[0]
    assert torch.allclose(batch[1][-1], alone[-1], atol=1e-4)  # the padded row's last position: what it gets alone
    (logits, _), (step_alone, _) = kv8.step_batch([7, 7], cache), kv8.step(7, kv8.prefill(short)[1])
    assert torch.allclose(logits[1], step_alone, atol=1e-4)


def test_on_cuda_the_int4_decoder_is_loaded_with_the_fp32_cache_the_export_would_have_built(onnx_backends, tiny_source,
                                                                                            tmp_path):
    """int4 runs on CUDA too, whose GroupQueryAttention does not read its int8 cache: there onnx/runtime.py's
    `decoder_session` loads it through onnx/fusion.py's `float_cache`. That gives the graph the export builds without
    `kv_scales`, op for op, and it decodes to the same bits (run here on the CPU; on CUDA: scripts/gpu_check.py).
    Without CUDA, asking for it loads the graph as it is."""
    import shutil

    import onnx

    from playground.models import load_torch_model
    from playground.onnx.export import HEAD_FILE, _export_fp32, _make_variant, kv_cache_scales
    from playground.onnx.fusion import KV_DTYPE_KEY, float_cache
    from playground.onnx.runtime import CUDA, decoder_session

    model = load_torch_model(tiny_source)
    raw = _export_fp32(model, tmp_path / "raw")
    folders = {name: tmp_path / name for name in ("int8_cache", "fp32_cache", "converted")}
    for folder in folders.values():
        folder.mkdir()
    _make_variant(raw, "int4", folders["int8_cache"] / MODEL_FILE, head_path=folders["int8_cache"] / HEAD_FILE,
                  kv_scales=kv_cache_scales(tiny_source, model))
    _make_variant(raw, "int4", folders["fp32_cache"] / MODEL_FILE, head_path=folders["fp32_cache"] / HEAD_FILE)
    graph = onnx.load(str(folders["int8_cache"] / MODEL_FILE))
    assert {e.key: e.value for e in graph.metadata_props}[KV_DTYPE_KEY] == "int8"
    assert float_cache(graph) == model.config.n_layer
    assert float_cache(graph) == 0  # a second time: nothing left to rewrite
    assert KV_DTYPE_KEY not in {e.key for e in graph.metadata_props}
    built = onnx.load(str(folders["fp32_cache"] / MODEL_FILE))
    assert [n.op_type for n in graph.graph.node] == [n.op_type for n in built.graph.node]
    assert {i.name for i in graph.graph.initializer} == {i.name for i in built.graph.initializer}
    onnx.save(graph, str(folders["converted"] / MODEL_FILE))
    shutil.copy(folders["fp32_cache"] / HEAD_FILE, folders["converted"] / HEAD_FILE)
    converted, fp = (OnnxRunner(folders[name] / MODEL_FILE, [CPU], prompt_graph=False) for name in ("converted", "fp32_cache"))
    assert converted.past_dtype == fp.past_dtype == np.float32
    ids = tiny_source.tokenizer(PROMPT)["input_ids"]
    (a, ca), (b, cb) = converted.prefill(ids), fp.prefill(ids)
    for token in (5, 9, 11):
        assert torch.equal(a, b)
        (a, ca), (b, cb) = converted.step(token, ca), fp.step(token, cb)
    assert torch.equal(a, b)
    session = decoder_session(folders["int8_cache"] / MODEL_FILE, [CUDA, CPU])
    past = next(i for i in session.get_inputs() if i.name.startswith("past_key_values."))
    assert past.type == ("tensor(float)" if session.get_providers()[0] == CUDA else "tensor(int8)")


def test_io_binding_path_gives_the_same_logits(onnx_backends, tiny_source):
    path = onnx_backends["fp32"].model_path
    plain, bound = OnnxRunner(path, [CPU], io_binding=False), OnnxRunner(path, [CPU], io_binding=True)
    ids = tiny_source.tokenizer(PROMPT)["input_ids"]
    (a, ca), (b, cb) = plain.prefill(ids), bound.prefill(ids)
    for token in (5, 9, 11):
        assert np.allclose(a.numpy(), b.numpy(), atol=1e-6)
        (a, ca), (b, cb) = plain.step(token, ca), bound.step(token, cb)
    assert np.allclose(a.numpy(), b.numpy(), atol=1e-6)


ATTENTION_ATOL = 1e-4


@pytest.mark.parametrize("variant", ["fp32", "int8", "int4"])
def test_onnx_attention_is_causal_normalised_and_its_own(tiny_backend, tiny_source, onnx_backends, variant):
    ids = tiny_source.tokenizer(PROMPT * 3)["input_ids"][:40]
    onnx_attention = onnx_backends[variant].attention(ids)  # (L, H, T, T), from the ONNX graph
    torch_attention = tiny_backend.attention(ids)
    n_layer, n_head = tiny_backend.model.config.n_layer, tiny_backend.model.config.n_head
    assert onnx_attention.shape == torch_attention.shape == (n_layer, n_head, len(ids), len(ids))
    for attention in (onnx_attention, torch_attention):
        assert np.allclose(attention.sum(-1), 1.0, atol=1e-5)  # each query's row is a distribution
        assert np.abs(np.triu(attention, k=1)).max() == 0.0  # no query attends to a later token
    diff = np.abs(onnx_attention - torch_attention).max()
    if variant == "fp32":
        assert diff < ATTENTION_ATOL
    else:
        assert 0 < diff < 0.5  # quantized: the variant's own numbers, close to but not equal to fp32


def test_damaged_attention_graph_is_rebuilt(tiny_source, exports_root, onnx_backends):
    from playground.onnx.export import ATTENTION_FILE

    folder = export_folder(tiny_source, "int4", exports_root)
    (folder / ATTENTION_FILE).write_bytes(b"not a model")
    path, manifest = ensure_export(tiny_source, "int4", exports_root, progress=False)
    assert (folder / ATTENTION_FILE).stat().st_size == manifest["files"][ATTENTION_FILE]["bytes"] > 1000


def test_fp16_export_builds_here_with_overflow_prone_ops_kept_in_fp32(tiny_source, tmp_path):
    """fp16 only runs on CUDA, but the conversion runs anywhere: check what it produced."""
    import onnx
    from onnx import TensorProto

    path, manifest = ensure_export(tiny_source, "fp16", tmp_path, progress=False)
    graph = onnx.load(str(path)).graph
    big = [i for i in graph.initializer if len(i.dims) == 2 and i.dims[0] * i.dims[1] > 1000]
    assert big and all(i.data_type == TensorProto.FLOAT16 for i in big)
    assert {i.type.tensor_type.elem_type for i in graph.input if i.name.startswith("past")} == {TensorProto.FLOAT}  # fp32 I/O
    inits = {i.name: i.data_type for i in graph.initializer}
    layer_norms = [n for n in graph.node if n.op_type == "LayerNormalization"]
    assert layer_norms and all(inits.get(n.input[1], TensorProto.FLOAT) == TensorProto.FLOAT for n in layer_norms)
    if not torch.cuda.is_available():
        assert manifest["verification"]["checked"] is False and "no GPU" in manifest["verification"]["reason"]


def _statistics_graph(vocab: int):
    """A real ONNX graph whose `logits` output is its input, with onnx/stats.py's statistics appended."""
    import onnx
    from onnx import TensorProto, helper

    from playground.onnx.stats import add_statistics

    graph = helper.make_graph(
        [helper.make_node("Identity", ["scores"], ["logits"])], "scores",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch_size", "sequence_length", vocab])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", vocab])])
    model = add_statistics(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9))
    onnx.checker.check_model(model)
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=[CPU])


@pytest.mark.parametrize("vocab", [50257, 300, 1009, 7])
def test_graph_statistics_equal_the_loops_own_on_ties_and_small_vocabularies(vocab):
    """onnx/stats.py's block top-k is exact: the same ids in the same order as the loop's numpy top-k (lower id
    first on equal logits), for GPT-2's vocabulary (blocks of 29), one of fewer than k blocks (300), a prime one
    (1009: the last block padded) and one smaller than a block (7); log-sum-exp, probabilities and entropy match
    float64 to float32 rounding."""
    from playground.generation import StepStats

    session = _statistics_graph(vocab)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, vocab)) * 3).astype(np.float32)  # (N, T, V)
    x[0, 0, : min(vocab, 40)] = x[0, 0].max() + 1  # a tie across the top, inside and across blocks
    x[1, 2, vocab - 3:] = x[1, 2].max() + 2  # the largest logits in the last, partial block
    x[0, 1, ::5] = 7.5  # many equal logits, every 5th id
    for k in sorted({1, 5, min(10, vocab), min(100, vocab)}):
        logits, top_logits, top_ids, lse, mean = session.run(None, {"scores": x, "top_k": np.array([k], dtype=np.int64)})
        assert top_logits.shape == top_ids.shape == (2, 3, k) and lse.shape == mean.shape == (2, 3)
        for n in range(2):
            given = StepStats.of(torch.from_numpy(x[n]), k, np.empty((3, vocab), np.float32),
                                 (top_logits[n], top_ids[n], lse[n], mean[n]))
            mine = StepStats.of(torch.from_numpy(x[n]), k, np.empty((3, vocab), np.float32))
            assert given.top_ids == mine.top_ids
            exact = x[n].astype(np.float64)  # (T, V)
            lse_exact = np.log(np.exp(exact - exact.max(-1, keepdims=True)).sum(-1)) + exact.max(-1)
            p = np.exp(exact - lse_exact[:, None])
            entropy_exact = -(p * np.log2(np.maximum(p, 1e-300))).sum(-1)
            assert np.allclose(given.lse, lse_exact, rtol=1e-6, atol=1e-6)
            assert np.allclose(given.top_probs, np.take_along_axis(p, np.asarray(given.top_ids), 1), rtol=2e-6)
            assert np.allclose(given.entropy_bits, entropy_exact, atol=2e-5)


@pytest.mark.parametrize("variant", ["fp32", "int8", "int4"])
def test_exports_compute_the_statistics_of_each_run_in_the_graph(onnx_backends, tiny_source, variant):
    """The prompt's run gives every position's statistics, each step those of its rows (a batch, a row dropped), and
    they agree with the loop's numpy statistics of the same logits; a generation's records are the same either way."""
    from playground.generation import StepStats

    backend = onnx_backends[variant]
    runner = backend.runner
    assert runner.computes_statistics
    ids = tiny_source.tokenizer(PROMPT)["input_ids"]
    k = 10

    def check(logits, given):
        x = logits.numpy()
        scratch = np.empty(x.shape, np.float32)
        a, b = StepStats.of(logits, k, scratch, given), StepStats.of(logits, k, scratch)
        assert a.top_ids == b.top_ids
        assert np.allclose(a.top_probs, b.top_probs, rtol=1e-4, atol=1e-7) and np.allclose(a.lse, b.lse, atol=1e-4)
        assert np.allclose(a.entropy_bits, b.entropy_bits, atol=1e-3)

    logits, cache = backend.prefill(ids, top_k=k)
    given = backend.statistics(cache)
    assert given[0].shape == (1, len(ids), k)
    check(logits, tuple(a[0] for a in given))
    cache = backend.expand(cache, 3)
    logits, cache = backend.step_batch([5, 9, 11], cache)
    check(logits, tuple(a[:, -1] for a in backend.statistics(cache)))
    cache = backend.select(cache, [0, 2])
    for tokens in ([4, 6], [7, 8]):
        logits, cache = backend.step_batch(tokens, cache)
        check(logits, tuple(a[:, -1] for a in backend.statistics(cache)))


@pytest.mark.parametrize("prompt", [PROMPT, "The"])
def test_records_are_the_same_with_the_graphs_statistics_and_without(onnx_backends, tiny_source, monkeypatch, prompt):
    """A run on the export's own statistics and the same run with them not fetched (the loop computes its own): same
    tokens, ranks and alternatives, probabilities and entropies within float32 rounding; prompt tokens too, and a
    one-token prompt (its run is the prompt's, then steps bind their own arrays)."""
    backend = onnx_backends["int8"]
    settings = GenerationSettings(max_new_tokens=12, do_sample=True, seed=3, top_k=20, top_alternatives=7)
    with_graph = generate(backend, tiny_source, prompt, settings)
    monkeypatch.setattr(backend.runner, "computes_statistics", False)  # the runner's own switch (bench.loop's bare loop)
    without = generate(backend, tiny_source, prompt, settings)
    assert without.tokens and backend.statistics(backend.prefill([5])[1]) is None
    for a, b in zip(with_graph.prompt_tokens + with_graph.tokens, without.prompt_tokens + without.tokens, strict=True):
        assert (a.token_id, a.rank, [t.token_id for t in a.top]) == (b.token_id, b.rank, [t.token_id for t in b.top])
        if a.raw_prob is not None:
            assert a.raw_prob == pytest.approx(b.raw_prob, rel=1e-4) and a.entropy_bits == pytest.approx(b.entropy_bits, abs=1e-3)
