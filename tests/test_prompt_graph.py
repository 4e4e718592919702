"""The quantized exports' prompt graph (onnx/prompt.py): prompts in int8 GEMMs, decoding steps by the decoder's graph.

On the tiny model's real exports: what the graph multiplies by is what MatMulNBits multiplies by, every row is quantized
alone (a row's numbers do not depend on the batch, the padding or the prompt's length), and its numbers stay those
of the decoder's graph up to int8 rounding."""

import numpy as np
import pytest
import torch

from playground.backends.onnx import OnnxBackend
from playground.onnx.prompt import PROMPT_FILE, dequantize_nbits, integer_matmuls
from playground.onnx.runtime import CPU, OnnxRunner

PROMPT = "The return value of a function is the value of the expression"


@pytest.fixture(scope="module")
def backends(tiny_source, tiny_exports_root):
    return {v: OnnxBackend(tiny_source, v, device="cpu", exports_root=tiny_exports_root, progress=False)
            for v in ("fp32", "int8", "int4")}


def _ops(path) -> dict:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    counts: dict = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@pytest.mark.parametrize("bits, block, symmetric",
                         [(8, 128, True), (8, 128, False), (8, 32, False), (4, 64, True), (4, 64, False)])
def test_the_dequantized_weight_is_what_matmulnbits_multiplies_by(bits, block, symmetric):
    """One MatMulNBits made by onnxruntime's own quantizer (K = 192: a padded last block at 128; 3 blocks of 64: 4-bit
    zero points packed with a spare half byte), run with fp32 arithmetic (accuracy_level 0): x @ dequantize_nbits(...)
    gives its output."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    rng = np.random.default_rng(bits + block)
    k, n = 192, 40
    weight = rng.standard_normal((k, n)).astype(np.float32) * 0.05 + (0 if symmetric else 0.03)  # skewed: zero points differ
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric, accuracy_level=0, bits=bits)
    quantizer = MatMulNBitsQuantizer(model, algo_config=config)
    quantizer.process()
    model = quantizer.model.model
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    assert (len(node.input) > 3 and bool(node.input[3])) != symmetric  # zero points exactly when asymmetric
    dequantized = dequantize_nbits(node, {i.name: i for i in model.graph.initializer})
    assert dequantized.shape == (k, n)
    assert 0 < np.abs(dequantized - weight).max() < np.abs(weight).max() / (4 if bits == 4 else 64)  # rounded, not far
    x = rng.standard_normal((5, k)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString(), providers=[CPU]).run(None, {"x": x})[0]
    assert np.allclose(got, x @ dequantized, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("k, n", [(192, 40), (40, 192)])
def test_rows_are_quantized_over_their_own_range_where_the_weight_does_not_widen(k, n):
    """integer_matmuls on one MatMulNBits, against its arithmetic written out in numpy: where N <= K (the projections
    back to the hidden size) each row in 255 steps from min(x, 0) to max(x, 0) with its own zero point, taken off after
    through the columns' sums; where N > K symmetric around 128. Rows like GELU's outputs (>= -0.17), an all-zero row
    (padding) and an all-negative row."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from playground.onnx.prompt import per_column_int8

    rng = np.random.default_rng(k)
    weight = rng.standard_normal((k, n)).astype(np.float32) * 0.05
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    quantizer = MatMulNBitsQuantizer(model, algo_config=DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False, bits=8,
                                                                                      accuracy_level=4))
    quantizer.process()
    model = quantizer.model.model
    node = next(node for node in model.graph.node if node.op_type == "MatMulNBits")
    node.output[0] = "out"  # integer_matmuls leaves the node writing the logits alone
    model.graph.output[0].name = "out"
    wq, column_scale = per_column_int8(dequantize_nbits(node, {i.name: i for i in model.graph.initializer}))
    assert integer_matmuls(model) == 1
    assert ("ReduceMin" in {node.op_type for node in model.graph.node}) == (n <= k)
    x = rng.standard_normal((4, k)).astype(np.float32)
    x[0] = x[0] * 0.5 * (1 + np.tanh(0.8 * x[0]))  # GELU-like: mostly >= 0
    x[1] = 0  # padding
    x[2] = -np.abs(x[2])
    got = ort.InferenceSession(model.SerializeToString(), providers=[CPU]).run(None, {"x": x})[0]
    if n <= k:
        low, high = np.minimum(x.min(1, keepdims=True), 0), np.maximum(x.max(1, keepdims=True), 0)
        scale = np.maximum(high - low, np.float32(1e-12)) / np.float32(255)
        zero = np.round(-low / scale)
        q = np.clip(np.round(x / scale) + zero, 0, 255)
    else:
        scale = np.maximum(np.abs(x).max(1, keepdims=True), np.float32(1e-12)) / np.float32(127)
        zero = np.float32(128)
        q = np.clip(np.round(x / scale) + zero, 0, 255)
    want = ((q - zero) @ wq.astype(np.float32)) * column_scale * scale
    assert np.abs(got[1]).max() == 0
    assert np.allclose(got, want, atol=1e-5 * np.abs(want).max())
    exact = x @ (wq * column_scale)
    assert np.abs(got - exact).max() < 0.02 * np.abs(exact).max()  # int8 rounding of the rows, nothing more


def test_quantized_exports_run_prompts_in_int8_gemms_and_steps_by_the_decoder(backends, tiny_backend):
    layers = tiny_backend.model.config.n_layer
    for variant in ("int8", "int4"):
        backend = backends[variant]
        folder = backend.model_path.parent
        runner = backend.runner
        assert (folder / PROMPT_FILE).exists() and runner.prompt_session is not None and runner.prompt_off is None
        prompt, decoder = _ops(folder / PROMPT_FILE), _ops(backend.model_path)
        assert prompt.get("MatMulNBits") == 1  # lm_head alone, which scores one position before the first token
        assert prompt["MatMulIntegerToFloat"] == decoder["MatMulNBits"] - 1 and "MatMulIntegerToFloat" not in decoder
        assert prompt["MatMulIntegerToFloat"] == 4 * layers  # each block's c_attn, attention c_proj, c_fc, MLP c_proj
        verification = backend.manifest["verification"]
        assert verification["checked"] and 0 < verification["decoder_max_abs_logit_diff"] < 1
    assert not (backends["fp32"].model_path.parent / PROMPT_FILE).exists() and backends["fp32"].runner.prompt_session is None


@pytest.mark.parametrize("variant", ["int8", "int4"])
def test_the_prompt_graph_gives_the_decoders_distribution_up_to_int8_rounding(backends, tiny_source, variant):
    backend = backends[variant]
    alone = OnnxRunner(backend.model_path, [CPU], prompt_graph=False)
    assert alone.prompt_session is None
    ids = tiny_source.tokenizer(PROMPT)["input_ids"]
    (fast, fast_cache), (plain, plain_cache) = backend.runner.prefill(ids), alone.prefill(ids)
    p, q = torch.softmax(fast, -1), torch.softmax(plain, -1)
    assert 0 < (p - q).abs().max() < 0.02  # not the same graph, the same distribution
    assert (fast.argmax(-1) == plain.argmax(-1)).float().mean() >= 0.9
    # The cache the prompt graph wrote is one the decoder's steps continue from: the next steps agree as closely.
    for token in (5, 9, 3):
        (a, fast_cache), (b, plain_cache) = backend.runner.step(token, fast_cache), alone.step(token, plain_cache)
        assert (torch.softmax(a, -1) - torch.softmax(b, -1)).abs().max() < 0.02


def test_each_row_is_quantized_alone(backends, tiny_source):
    """Rows quantized one by one: a prompt's numbers do not depend on what shares its batch, on the padding, or on
    how long the prompt goes on (a scale per tensor would make each of these change them)."""
    runner = backends["int8"].runner
    ids = tiny_source.tokenizer(PROMPT)["input_ids"]
    short = tiny_source.tokenizer("The value")["input_ids"]
    whole, _ = runner.prefill(ids)
    batch, _ = runner.prefill_batch([ids, short])
    alone, _ = runner.prefill(short)
    assert torch.allclose(batch[0], whole, atol=1e-4)
    assert torch.allclose(batch[1][-len(short):], alone, atol=1e-4)  # the padded row: its positions after the padding
    prefix, _ = runner.prefill(ids[:5])
    assert torch.allclose(whole[:5], prefix, atol=1e-4)


def test_a_graph_without_matmulnbits_gets_no_prompt_graph(backends):
    import onnx

    model = onnx.load(str(backends["fp32"].model_path))
    assert integer_matmuls(model) == 0


@pytest.mark.parametrize("variant", ["int8", "int4"])
def test_over_an_int8_cache_the_prompt_graph_fills_it_as_the_decoder_would(backends, tiny_source, variant):
    """int8 and int4 keep an int8 cache on the CPU (onnx/export.py INT8_KV_CACHE_VARIANTS): the prompt graph attends in
    fp32 over the prompt's own keys and values and returns them as the cache holds them, round(x / scale), for the
    runner to copy in. What it writes is what the decoder's own prompt pass (GroupQueryAttention over the int8 cache)
    writes, up to a rounding step where the two graphs' matmuls differ in the last digits; a prompt after cached
    positions runs by the decoder, and gives what the whole prompt gives."""
    import onnx

    backend = backends[variant]
    runner = backend.runner
    assert runner.past_dtype == np.int8 and runner.prompt_copies_cache
    prompt = onnx.load(str(backend.model_path.parent / PROMPT_FILE), load_external_data=False).graph
    assert not [i for i in prompt.input if i.name.startswith("past_key_values.")]
    assert {o.type.tensor_type.elem_type for o in prompt.output if o.name.startswith("present.")} == {onnx.TensorProto.INT8}
    alone = OnnxRunner(backend.model_path, [CPU], prompt_graph=False)
    ids = tiny_source.tokenizer(PROMPT)["input_ids"]
    (_, filled), (_, own) = runner.prefill(ids), alone.prefill(ids)
    for mine, theirs in zip(filled.past, own.past):
        a, b = mine.array[:, :, :len(ids)].astype(int), theirs.array[:, :, :len(ids)].astype(int)
        # Measured: at most 3 steps apart, 0.1-0.3 on average (the later layers the most); a wrong layer, position or
        # scale would be tens of steps off.
        assert np.abs(a - b).max() <= 4 and np.abs(a - b).mean() < 0.4
        assert np.abs(a).max() > 10  # real numbers, not zeros
    whole, _ = runner.prefill(ids)
    _, head = runner.prefill(ids[:5])
    rest, _ = runner.run(ids[5:], head.past, 5)  # after 5 cached positions: the decoder's graph
    assert (torch.softmax(torch.from_numpy(rest[-1]), -1) - torch.softmax(whole[-1], -1)).abs().max() < 0.02
