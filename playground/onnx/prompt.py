"""The prompt's pass in int8 arithmetic: a second graph whose blocks multiply with onnxruntime's int8 GEMM.

A decoding step multiplies one row per sequence by each weight: it waits for the weight's bytes, which is what
MatMulNBits (weights in blocks of 8 or 4 bits) keeps few. A prompt multiplies hundreds of rows by the same weight:
it waits for arithmetic, and there MatMulNBits' CPU kernel is slow. One 768 x 3072 weight at 512 rows (2 threads,
throwaway timing script): MatMulNBits 8-bit 11.2 ms, fp32 MatMul 12.1 ms, MatMulInteger (u8 x s8, MLAS's quantized
GEMM, which uses the CPU's int8 dot-product or matrix units) 4.0 ms. So the quantized variants ship `prompt.onnx`
beside `model.onnx`: the same graph (same inputs, outputs, attention, cache written in place, lm_head), in which each
block's MatMulNBits is replaced by:

- its weight as int8 per output column: the very numbers the decoder multiplies by (the blocks dequantized), then
  rounded to one scale per column;
- each activation row quantized alone, so that a row's numbers depend on that row only, never on the other rows of
  a batch, on padding or on the prompt's length, as in the decoder (QuantizeLinear with one block per row). A scale
  per tensor (onnxruntime's `DynamicQuantizeLinear`) was 12% faster at 512 tokens but would let one user's prompt
  change another's numbers in a shared batch, and one large row (GPT-2's first position) coarsen every other row.
  Rows that feed a widening weight (c_attn, the MLP's c_fc: N > K) are quantized symmetrically around 128 (u8, zero
  point 128, scale = max |x| / 127); rows that feed the two projections back to the hidden size (N <= K) over their
  own range, min to max in 255 steps with a zero point per row. That nearly doubles the steps of the MLP's GELU
  outputs (almost all >= -0.17), and costs one multiply-subtract over the output (MatMulIntegerToFloat takes one zero
  point for all rows: z x scale x each column's sum is taken off after), no wider than the input. Measured
  (random:gpt2 int8, the bench, export format 17), the time to first token did not move: 17.9-18.1 ms at 32 tokens
  and 188-191 at 512 in two runs, against 17.3-20.1 and 180-195 in four with every row symmetric; with every row
  asymmetric, +22% and +13%;
- `MatMulIntegerToFloat` (the int32 sums times the columns' scales, in one kernel), then times the rows' scales.

onnxruntime has no per-row dynamic quantization op or per-row scale in its int8 matmuls, so the rows are
quantized with standard ops (Abs, ReduceMax, ReduceMin, QuantizeLinear). Measured on the demo models (English /
Chinese), KL to PyTorch fp32 over whole windows (int8, export format 17): 0.000044 / 0.000056 with this graph,
0.000053 / 0.000072 with every row symmetric, 0.000042 / 0.000049 with every row asymmetric, 0.000041 / 0.000052
with the decoder's graph (docs/onnx.md). The runner uses it for
every run of more than one new token on the CPU (onnx/runtime.py); a decoding step keeps MatMulNBits. Over the
int8 KV cache, the graph also attends in fp32 and returns the prompt's keys and values as the cache holds them
(`fill_int8_cache`).

On x86 CPUs without int8 dot products (AVX2 alone), MLAS multiplies u8 by s8 with VPMADDUBSW, whose pairwise sums
saturate at int16: there the sums would be wrong. `int8_gemm_is_exact` asks the CPU once, with a product that
saturates there, and the runner keeps the decoder's graph for prompts where it is not exact (and says so).
"""

from __future__ import annotations

import numpy as np

PROMPT_FILE = "prompt.onnx"
PROMPT_OPSET = 21  # QuantizeLinear's blocked form (one scale per row)
ACTIVATION_ZERO_POINT = 128  # u8 activations, symmetric: q = round(x / s) + 128, s = max |x| / 127
ACTIVATION_STEPS = 255  # u8 activations over a row's own range: s = (max(x, 0) - min(x, 0)) / 255
WEIGHT_MAX = 127  # s8 weights in [-127, 127], symmetric


def dequantize_nbits(node, initializers: dict) -> np.ndarray | None:
    """The (K, N) float32 weight a MatMulNBits node multiplies by, or None for a layout this does not read.

    MatMulNBits keeps B transposed, (N, blocks, block_size * bits / 8) uint8, each byte holding 8 / bits numbers
    (the low bits first), `scales` (N * blocks) float32, and unsigned numbers around a zero point per block:
    `zero_points` (N, blocks * bits / 8) uint8 packed as B, or without them an implicit 2^(bits - 1) (symmetric)."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    bits, k, n = attrs.get("bits", 4), attrs["K"], attrs["N"]
    zero_points = node.input[3] if len(node.input) > 3 and node.input[3] else None
    extra = [name for name in node.input[4:] if name]
    readable = all(name in initializers for name in (node.input[1], node.input[2], zero_points) if name is not None)
    if bits not in (4, 8) or extra or not readable:
        return None
    packed = numpy_helper.to_array(initializers[node.input[1]])  # (N, blocks, bytes)
    scales = numpy_helper.to_array(initializers[node.input[2]]).reshape(n, -1).astype(np.float32)  # (N, blocks)

    def unpack(data: np.ndarray) -> np.ndarray:  # the numbers in bytes, along the last axis
        if bits == 8:
            return data.astype(np.int16)
        return np.stack([data & 0x0F, data >> 4], axis=-1).reshape(*data.shape[:-1], -1).astype(np.int16)

    values = unpack(packed)  # (N, blocks, block)
    if zero_points is None:
        offsets = np.full(scales.shape, 1 << (bits - 1), dtype=np.int16)
    else:
        offsets = unpack(numpy_helper.to_array(initializers[zero_points]).reshape(n, -1))[:, :scales.shape[1]]
    weight = ((values - offsets[:, :, None]).astype(np.float32) * scales[:, :, None]).reshape(n, -1)[:, :k]
    return np.ascontiguousarray(weight.T)  # (K, N)


def per_column_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale per column) with weight ≈ q * scale."""
    scale = np.abs(weight).max(axis=0) / WEIGHT_MAX
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.round(weight / scale), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8), scale


def integer_matmuls(model) -> int:
    """Replace each MatMulNBits but lm_head (the node that writes the logits) by the int8 GEMM of the module's
    doc; returns how many were replaced. Every replacement keeps its node's input and output names."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    shared = {
        "prompt_zero_point": np.array(ACTIVATION_ZERO_POINT, dtype=np.uint8),
        "prompt_axis_last": np.array([-1], dtype=np.int64),
        "prompt_tiny": np.array(1e-12, dtype=np.float32),
        "prompt_levels": np.array(WEIGHT_MAX, dtype=np.float32),
        "prompt_steps": np.array(ACTIVATION_STEPS, dtype=np.float32),
        "prompt_zero": np.array(0.0, dtype=np.float32),
        "prompt_one": np.array(1.0, dtype=np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in shared.items())
    nodes, replaced, unused = [], 0, set()
    for node in graph.node:
        weight = dequantize_nbits(node, initializers) if node.op_type == "MatMulNBits" and "logits" not in node.output else None
        if weight is None:
            nodes.append(node)
            continue
        quantized, scale = per_column_int8(weight)
        k, n = weight.shape
        p = node.name or node.output[0]
        graph.initializer.extend([numpy_helper.from_array(quantized, f"{p}/int8_weight"),
                                  numpy_helper.from_array(scale, f"{p}/int8_scale")])
        unused.update(name for name in node.input[1:4] if name)  # weight, scales, zero points
        if n <= k:
            sums = (quantized.astype(np.int64).sum(axis=0) * scale).astype(np.float32)  # (N,): each column's sum, in units
            graph.initializer.append(numpy_helper.from_array(sums, f"{p}/column_sums"))
            nodes += _asymmetric_rows(p, node.input[0], node.output[0], k)
        else:
            nodes += _symmetric_rows(p, node.input[0], node.output[0], k)
        replaced += 1
    del graph.node[:]
    graph.node.extend(nodes)
    still_read = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name not in unused or i.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if replaced:
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        for entry in model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = max(entry.version, PROMPT_OPSET)
    return replaced


def _symmetric_rows(p: str, x: str, y: str, k: int) -> list:
    """y = x @ weight, each row of x quantized around 128 with scale max |x| / 127 (the module's doc); `p` prefixes the
    names, `{p}/int8_weight` and `{p}/int8_scale` are the weight's."""
    from onnx import helper

    return [
        # Each row's scale s = max |x| / 127, (..., 1); the row quantized as one block of K (QuantizeLinear's blocked
        # form, opset 21): 25% faster at 512 rows than flattening to (rows, K) for a per-axis scale.
        helper.make_node("Abs", [x], [f"{p}/abs"], name=f"{p}/abs"),
        helper.make_node("ReduceMax", [f"{p}/abs", "prompt_axis_last"], [f"{p}/max"], name=f"{p}/max", keepdims=1),
        helper.make_node("Max", [f"{p}/max", "prompt_tiny"], [f"{p}/max_positive"], name=f"{p}/max_positive"),
        helper.make_node("Div", [f"{p}/max_positive", "prompt_levels"], [f"{p}/row_scale"], name=f"{p}/row_scale"),
        helper.make_node("Shape", [f"{p}/row_scale"], [f"{p}/scale_shape"], name=f"{p}/scale_shape"),
        helper.make_node("Expand", ["prompt_zero_point", f"{p}/scale_shape"], [f"{p}/row_zero_points"],
                         name=f"{p}/row_zero_points"),
        helper.make_node("QuantizeLinear", [x, f"{p}/row_scale", f"{p}/row_zero_points"], [f"{p}/rows_u8"],
                         name=f"{p}/quantize", axis=-1, block_size=k),
        helper.make_node("MatMulIntegerToFloat", [f"{p}/rows_u8", f"{p}/int8_weight", "prompt_one", f"{p}/int8_scale",
                                                  "prompt_zero_point"], [f"{p}/product"], name=f"{p}/MatMulIntegerToFloat",
                         domain="com.microsoft"),
        helper.make_node("Mul", [f"{p}/product", f"{p}/row_scale"], [y], name=f"{p}/scaled"),
    ]


def _asymmetric_rows(p: str, x: str, y: str, k: int) -> list:
    """y = x @ weight, each row of x quantized over its own range [min(x, 0), max(x, 0)] in 255 steps, zero point z per
    row; MatMulIntegerToFloat takes one zero point for all rows, so it multiplies the unsigned numbers as they are and
    z x scale x each column's sum (`{p}/column_sums`) is taken off after."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("ReduceMax", [x, "prompt_axis_last"], [f"{p}/max"], name=f"{p}/max", keepdims=1),
        helper.make_node("ReduceMin", [x, "prompt_axis_last"], [f"{p}/min"], name=f"{p}/min", keepdims=1),
        helper.make_node("Max", [f"{p}/max", "prompt_zero"], [f"{p}/high"], name=f"{p}/high"),
        helper.make_node("Min", [f"{p}/min", "prompt_zero"], [f"{p}/low"], name=f"{p}/low"),
        helper.make_node("Sub", [f"{p}/high", f"{p}/low"], [f"{p}/range"], name=f"{p}/range"),
        helper.make_node("Max", [f"{p}/range", "prompt_tiny"], [f"{p}/range_positive"], name=f"{p}/range_positive"),
        helper.make_node("Div", [f"{p}/range_positive", "prompt_steps"], [f"{p}/row_scale"], name=f"{p}/row_scale"),
        # z = round(-low / s), in [0, 255] as low <= 0 <= high.
        helper.make_node("Div", [f"{p}/low", f"{p}/row_scale"], [f"{p}/low_steps"], name=f"{p}/low_steps"),
        helper.make_node("Neg", [f"{p}/low_steps"], [f"{p}/zero_steps"], name=f"{p}/zero_steps"),
        helper.make_node("Round", [f"{p}/zero_steps"], [f"{p}/zero"], name=f"{p}/zero"),
        helper.make_node("Cast", [f"{p}/zero"], [f"{p}/row_zero_points"], name=f"{p}/row_zero_points", to=TensorProto.UINT8),
        helper.make_node("QuantizeLinear", [x, f"{p}/row_scale", f"{p}/row_zero_points"], [f"{p}/rows_u8"],
                         name=f"{p}/quantize", axis=-1, block_size=k),
        helper.make_node("MatMulIntegerToFloat", [f"{p}/rows_u8", f"{p}/int8_weight", "prompt_one", f"{p}/int8_scale"],
                         [f"{p}/product"], name=f"{p}/MatMulIntegerToFloat", domain="com.microsoft"),
        helper.make_node("Mul", [f"{p}/product", f"{p}/row_scale"], [f"{p}/scaled"], name=f"{p}/scaled"),
        helper.make_node("Mul", [f"{p}/zero", f"{p}/row_scale"], [f"{p}/zero_value"], name=f"{p}/zero_value"),
        helper.make_node("Mul", [f"{p}/zero_value", f"{p}/column_sums"], [f"{p}/offset"], name=f"{p}/offset"),
        helper.make_node("Sub", [f"{p}/scaled", f"{p}/offset"], [y], name=f"{p}/corrected"),
    ]


_EXACT: list[bool] = []


def int8_gemm_is_exact() -> bool:
    """Whether onnxruntime's u8 x s8 GEMM gives exact sums on this CPU (see the module's doc); asked once."""
    if not _EXACT:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        rows, depth, columns = 16, 64, 16  # a GEMM, not a vector product, so the kernel prompts use runs
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "w", "zero_point"], ["y"])], "saturation_check",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [rows, depth])],
            [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
            [numpy_helper.from_array(np.full((depth, columns), WEIGHT_MAX, dtype=np.int8), "w"),
             numpy_helper.from_array(np.array(ACTIVATION_ZERO_POINT, dtype=np.uint8), "zero_point")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 10
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, {"a": np.full((rows, depth), 255, dtype=np.uint8)})[0]
        _EXACT.append(bool((got == (255 - ACTIVATION_ZERO_POINT) * WEIGHT_MAX * depth).all()))
    return _EXACT[0]


PROMPT_CACHE_KEY, PROMPT_CACHE_COPY = "prompt_cache", "copy"  # metadata: the graph returns the cache, the runner copies it


def fill_int8_cache(model, kv_scales: list) -> int:
    """For a decoder whose cache is int8 (onnx/fusion.py's GroupQueryAttention path): make this fp32-cache graph
    compute a prompt's attention in fp32 (MultiHeadAttention over the prompt's own keys and values, no past) and return
    each layer's keys and values as the int8 cache holds them, round(x / scale) per head and channel, saturated, as
    `present.{i}.key` / `.value` (N, H, T, D) int8; the runner copies them into the cache's buffers. GroupQueryAttention
    over an int8 cache takes 2.5x fp32 attention's time on a prompt (onnx/export.py `INT8_KV_CACHE_VARIANTS`): this
    way a prompt never runs it. Returns how many layers it rewrote (0: not this graph's shape, left as it was)."""
    from onnx import TensorProto, helper, numpy_helper

    from .fusion import set_metadata

    graph = model.graph
    attention = [n for n in graph.node if n.op_type == "MultiHeadAttention" and len(n.input) >= 9]
    if len(attention) != len(kv_scales):
        return 0
    graph.initializer.extend([numpy_helper.from_array(np.array(-128, dtype=np.float32), "prompt_int8_min"),
                              numpy_helper.from_array(np.array(127, dtype=np.float32), "prompt_int8_max")])
    after: dict[int, list] = {}  # each layer's quantizing nodes, placed right after its attention node
    for i, node in enumerate(attention):
        key, value = node.output[1], node.output[2]  # present.{i}.key / .value
        del node.input[5:]  # no attention bias, no past: the prompt attends to its own keys and values
        node.output[1], node.output[2] = f"{key}/fp32", f"{value}/fp32"
        quantize = after.setdefault(id(node), [])
        for name, scale in ((key, kv_scales[i][0]), (value, kv_scales[i][1])):
            graph.initializer.append(numpy_helper.from_array(np.asarray(scale, dtype=np.float32)[None, :, None, :], f"{name}/scale"))
            quantize += [
                helper.make_node("Div", [f"{name}/fp32", f"{name}/scale"], [f"{name}/steps"], name=f"{name}/steps"),
                helper.make_node("Round", [f"{name}/steps"], [f"{name}/rounded"], name=f"{name}/rounded"),
                helper.make_node("Clip", [f"{name}/rounded", "prompt_int8_min", "prompt_int8_max"], [f"{name}/saturated"],
                                 name=f"{name}/saturated"),
                helper.make_node("Cast", [f"{name}/saturated"], [name], name=f"{name}/int8", to=TensorProto.INT8),
            ]
    nodes = [n for node in graph.node for n in (node, *after.get(id(node), ()))]
    del graph.node[:]
    graph.node.extend(nodes)
    for output in graph.output:
        if output.name.startswith("present."):
            output.type.tensor_type.elem_type = TensorProto.INT8
    past = [i for i in graph.input if i.name.startswith("past_key_values.")]
    for entry in past:
        graph.input.remove(entry)
    while True:  # drop what only fed the past (its length): nodes nothing reads, until none is left
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        unread = [node for node in graph.node if not any(name in read for name in node.output)]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    set_metadata(model, PROMPT_CACHE_KEY, PROMPT_CACHE_COPY)
    return len(attention)


def write_prompt_graph(model_path, prompt_path, kv_scales: list | None = None) -> int:
    """`prompt.onnx` from a quantized variant's fused decoder with an fp32 cache (its `model.onnx`, or with `kv_scales`
    the fp32-cache graph the int8-cache decoder was made beside, see `fill_int8_cache`); returns how many matmuls it
    computes in int8."""
    import onnx

    model = onnx.load(str(model_path))
    replaced = integer_matmuls(model)
    if replaced and kv_scales is not None and not fill_int8_cache(model, kv_scales):
        raise ValueError("the graph's attention does not match its int8 cache's scales")
    if replaced:
        onnx.save(model, str(prompt_path))
    return replaced
