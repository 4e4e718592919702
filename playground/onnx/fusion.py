"""Graph surgery that makes optimum's GPT-2 decoder cheaper per step, without changing what it computes.

optimum exports each attention layer as ~70 nodes (shape arithmetic, head split, cache Concat, the
causal and padding masks, Softmax, head merge) and wraps every Conv1D in two Reshapes with their own
shape arithmetic. At batch 1 a decoding step runs ~1,300 nodes, and most are tiny: their dispatch cost,
not their arithmetic, is what the step pays (per-op profile: `python scripts/profile_ops.py`). Here:

- `fuse_attention`: each layer's attention becomes one `com.microsoft.MultiHeadAttention` node
  (causal, the attention mask as its key-padding mask), fed by the Split of c_attn's output that was
  there already, and the cache is written in place: `past_key_values.{i}.*` are fixed-capacity
  buffers (B, H, capacity, D) whose first P positions hold the cache (P = the mask's length - the new
  tokens), and `present.{i}.*` must be bound to those same buffers (IO binding): a step appends its
  keys and values at P instead of copying the whole cache into a new tensor (onnx/runtime.py). The
  graph's names are unchanged; its metadata says `kv_cache: in_place`.
  With `kv_scales` each layer is one `com.microsoft.GroupQueryAttention` node instead, whose cache is int8: a key or
  value is stored as round(x / scale), one fp32 scale per head and channel (calibrated at export over the model's own
  keys and values, onnx/export.py `kv_cache_scales`), and attention reads it back as int8. The cache is a quarter of
  fp32's bytes, which is what decoding at long contexts waits for: the int8 variant takes it
  (onnx/export.py `INT8_KV_CACHE_VARIANTS`, docs/onnx.md), and its prompts run by a graph of their own that fills it
  (onnx/prompt.py), as this node's prompt pass is slow. The padding the attention mask marks becomes an
  additive bias; `seqlens_k` is the batch's common length.
- `drop_linear_reshapes`: Conv1D's flatten to 2-D and back is dropped; MatMul takes (B, S, E) as is.
- `prune`: nodes nothing reads any more are removed.

onnxruntime's own GPT-2 fusion (`onnxruntime.transformers.optimize_model`) expects the older export
with one `past_{i}` input per layer: on optimum's graph it fuses the GELUs and the skip layer norms but
no attention. The rewrite is verified like every export: its logits against PyTorch's at build time,
and by the parity tests (tests/test_onnx.py).
"""

from __future__ import annotations

from collections import Counter

CONV1D_SCOPES = {"c_attn", "c_proj", "c_fc"}  # transformers' Conv1D modules in a GPT-2 block
KV_CACHE_KEY, KV_IN_PLACE = "kv_cache", "in_place"  # model metadata: the decoder's cache is written in place
KV_DTYPE_KEY = "kv_cache_dtype"  # model metadata: "int8" where the cache is quantized (absent: the graph's float type)
MASK_INT32, PAST_LENGTH = "attention_mask_int32", "past_sequence_length"  # what every fused layer reads (int32)
PADDING_BIAS = -1e9  # added to the attention scores of padding positions (GroupQueryAttention takes no padding mask)


def set_metadata(model, key: str, value: str) -> None:
    """Set one entry of the model's metadata (onnxruntime: `session.get_modelmeta().custom_metadata_map`)."""
    for entry in model.metadata_props:
        if entry.key == key:
            entry.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


def _producers(model) -> dict:
    return {output: node for node in model.graph.node for output in node.output}


def _consumers(model) -> dict[str, list]:
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _only_consumer(readers: dict, name: str, op_type: str):
    nodes = readers.get(name, [])
    return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op_type else None


def fuse_attention(model, kv_scales: list | None = None) -> int:
    """Replace each layer's attention with one MultiHeadAttention node; returns how many layers were fused.

    `kv_scales`: per layer (key scale, value scale), each (H, D) float32: one GroupQueryAttention node per layer with
    an int8 cache instead (see the module's docstring).

    Per layer, optimum's graph holds: Split(qkv) -> q, k, v (B, S, E); k, v -> Reshape -> Transpose ->
    Concat(past, .) = present.{i}.key / .value (B, H, P + S, D); softmax(q kᵀ / √D + masks) @ present.value
    -> Transpose -> Reshape = the input of c_proj (B, S, E). If any layer does not match exactly, the graph is
    left as it is (and its cache grows by concatenation, as optimum wrote it).
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inputs = {i.name: i for i in graph.input}
    if "attention_mask" not in inputs or "past_key_values.0.key" not in inputs:
        return 0  # the analysis graph (no cache) keeps its eager attention: its probabilities are outputs
    num_heads = inputs["past_key_values.0.key"].type.tensor_type.shape.dim[1].dim_value  # (B, H, P, D)
    producers, readers = _producers(model), _consumers(model)
    plans = []
    layer = 0
    while f"present.{layer}.key" in producers:
        plan = _attention_plan(producers, readers, layer)
        if plan is None:
            return 0  # one layer that does not match: leave the whole graph as optimum wrote it
        plans.append(plan)
        layer += 1
    if not plans:
        return 0
    mask, past_length = MASK_INT32, PAST_LENGTH
    graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "kv_axis_1"))
    nodes = _length_inputs()
    if kv_scales is not None:
        nodes += _int8_cache_inputs(graph, kv_scales)
    shared = len(nodes)
    for i, (split, key_concat, value_concat, merge) in enumerate(plans):
        q, k, v = split.output
        if kv_scales is None:
            nodes.append(helper.make_node(
                "MultiHeadAttention",
                # query, key, value, bias, key_padding_mask, attention_bias, past_key, past_value, past_sequence_length
                [q, k, v, "", mask, "", key_concat.input[0], value_concat.input[0], past_length],
                [merge.output[0], key_concat.output[0], value_concat.output[0]],
                name=f"/transformer/h.{i}/attn/MultiHeadAttention", domain="com.microsoft", num_heads=num_heads,
                unidirectional=1,
            ))
            continue
        nodes.append(helper.make_node(
            "GroupQueryAttention",
            # query, key, value, past_key, past_value, seqlens_k, total_sequence_length, cos_cache, sin_cache,
            # position_ids, attention_bias, head_sink, k_scale, v_scale
            [q, k, v, key_concat.input[0], value_concat.input[0], "kv_seqlens", "kv_total_length", "", "", "",
             "kv_padding_bias", "", f"kv_scale.{i}.key", f"kv_scale.{i}.value"],
            [merge.output[0], key_concat.output[0], value_concat.output[0]],
            name=f"/transformer/h.{i}/attn/GroupQueryAttention", domain="com.microsoft", num_heads=num_heads,
            kv_num_heads=num_heads, k_quant_type="PER_CHANNEL", v_quant_type="PER_CHANNEL", kv_cache_bit_width=8,
        ))
        for name in (key_concat.input[0], value_concat.input[0]):
            inputs[name].type.tensor_type.elem_type = TensorProto.INT8
        outputs = {o.name: o for o in graph.output}
        for name in (key_concat.output[0], value_concat.output[0]):
            outputs[name].type.tensor_type.elem_type = TensorProto.INT8
    # Each fused node takes the place of its layer's output Reshape: after its inputs, before c_proj.
    fused = {id(plan[3]): node for plan, node in zip(plans, nodes[shared:])}
    drop = {id(node) for plan in plans for node in plan[1:3]}
    ordered = list(nodes[:shared])
    for node in graph.node:
        if id(node) in fused:
            ordered.append(fused[id(node)])
        elif id(node) not in drop:
            ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    set_metadata(model, KV_CACHE_KEY, KV_IN_PLACE)
    if kv_scales is not None:
        set_metadata(model, KV_DTYPE_KEY, "int8")
    prune(model)
    return len(plans)


def _length_inputs() -> list:
    """The nodes every fused layer reads (they read the initializer `kv_axis_1`, [1]): `attention_mask` as int32, and
    the positions already in the cache = the mask's length (all positions) - the new tokens' count, (1,) int32."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("Cast", ["attention_mask"], [MASK_INT32], name="attention_mask_Cast_int32", to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["kv_mask_shape"], name="kv_mask_Shape"),
        helper.make_node("Shape", ["input_ids"], ["kv_ids_shape"], name="kv_ids_Shape"),
        helper.make_node("Gather", ["kv_mask_shape", "kv_axis_1"], ["kv_total"], name="kv_total_Gather", axis=0),
        helper.make_node("Gather", ["kv_ids_shape", "kv_axis_1"], ["kv_new"], name="kv_new_Gather", axis=0),
        helper.make_node("Sub", ["kv_total", "kv_new"], ["kv_past"], name="kv_past_Sub"),
        helper.make_node("Cast", ["kv_past"], [PAST_LENGTH], name="kv_past_Cast", to=TensorProto.INT32),
    ]


def float_cache(model) -> int:
    """The int8-cache decoder (`fuse_attention` with `kv_scales`) as the fp32-cache one: each GroupQueryAttention node
    becomes the MultiHeadAttention node `fuse_attention` writes without scales, over the same inputs, outputs and
    in-place buffers, now float32; the scales and the padding bias go. For a device whose GroupQueryAttention does not
    read this cache (onnxruntime's CUDA kernel takes fp16 or bf16 activations and no attention bias: onnx/runtime.py
    loads the int4 variant so there). Returns how many layers it rewrote (0: not an int8-cache graph)."""
    from onnx import TensorProto, helper

    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    if not any(n.op_type == "GroupQueryAttention" for n in graph.node):
        return 0
    # Those of them that GroupQueryAttention did not read were pruned: all of them again, first (they read inputs alone).
    lengths = _length_inputs()
    written = {node.output[0] for node in lengths}
    if "kv_axis_1" not in {i.name for i in graph.initializer}:
        graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "kv_axis_1"))
    nodes = [*lengths, *(node for node in graph.node if node.output[0] not in written)]
    del graph.node[:]
    graph.node.extend(nodes)
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]  # the graph's own nodes, after the copy
    for node in attention:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        q, k, v, past_key, past_value = node.input[:5]
        replacement = helper.make_node(
            "MultiHeadAttention", [q, k, v, "", MASK_INT32, "", past_key, past_value, PAST_LENGTH],
            list(node.output), name=node.name.replace("GroupQueryAttention", "MultiHeadAttention"), domain="com.microsoft",
            num_heads=attrs["num_heads"], unidirectional=1)
        node.CopyFrom(replacement)
    for entry in [*graph.input, *graph.output]:
        if entry.name.startswith(("past_key_values.", "present.")):
            entry.type.tensor_type.elem_type = TensorProto.FLOAT
    kept = [entry for entry in model.metadata_props if entry.key != KV_DTYPE_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    prune(model)
    return len(attention)


def _int8_cache_inputs(graph, kv_scales: list) -> list:
    """GroupQueryAttention's shared inputs, from the nodes `fuse_attention` adds first (kv_total, kv_new: (1,) int64):
    `kv_seqlens` (B,) int32, every row's length - 1 (rows share one length, their padding on the left);
    `kv_total_length`, a scalar int32; `kv_padding_bias` (B, 1, S, T), 0 where the mask is 1 and PADDING_BIAS where
    it is 0. And each layer's scales as initializers (1, H, 1, D)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    for i, (key, value) in enumerate(kv_scales):
        for name, scale in ((f"kv_scale.{i}.key", key), (f"kv_scale.{i}.value", value)):
            graph.initializer.append(numpy_helper.from_array(np.asarray(scale, dtype=np.float32)[None, :, None, :], name))
    graph.initializer.extend([
        numpy_helper.from_array(np.array([0], dtype=np.int64), "kv_axis_0"),
        numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "kv_bias_axes"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "kv_one"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "kv_one_float"),
        numpy_helper.from_array(np.array(-PADDING_BIAS, dtype=np.float32), "kv_bias_scale"),
    ])
    return [
        helper.make_node("Gather", ["kv_ids_shape", "kv_axis_0"], ["kv_rows"], name="kv_rows_Gather", axis=0),
        helper.make_node("Cast", ["kv_total"], ["kv_total_int32"], name="kv_total_Cast", to=TensorProto.INT32),
        helper.make_node("Squeeze", ["kv_total_int32"], ["kv_total_length"], name="kv_total_Squeeze"),
        helper.make_node("Sub", ["kv_total", "kv_one"], ["kv_last"], name="kv_last_Sub"),
        helper.make_node("Expand", ["kv_last", "kv_rows"], ["kv_seqlens_int64"], name="kv_seqlens_Expand"),
        helper.make_node("Cast", ["kv_seqlens_int64"], ["kv_seqlens"], name="kv_seqlens_Cast", to=TensorProto.INT32),
        # (mask - 1) * 1e9: 0 where attended, -1e9 on padding; (B, T) -> (B, 1, 1, T) -> (B, 1, S, T).
        helper.make_node("Cast", ["attention_mask"], ["kv_mask_float"], name="kv_mask_Cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["kv_mask_float", "kv_one_float"], ["kv_mask_off"], name="kv_mask_Sub"),
        helper.make_node("Mul", ["kv_mask_off", "kv_bias_scale"], ["kv_bias_2d"], name="kv_bias_Mul"),
        helper.make_node("Unsqueeze", ["kv_bias_2d", "kv_bias_axes"], ["kv_bias_4d"], name="kv_bias_Unsqueeze"),
        helper.make_node("Concat", ["kv_rows", "kv_one", "kv_new", "kv_total"], ["kv_bias_shape"], name="kv_bias_shape_Concat",
                         axis=0),
        helper.make_node("Expand", ["kv_bias_4d", "kv_bias_shape"], ["kv_padding_bias"], name="kv_bias_Expand"),
    ]


def _attention_plan(producers: dict, readers: dict, layer: int):
    """(Split, key Concat, value Concat, output Reshape) of one layer, or None when the layer is shaped otherwise."""
    key_concat, value_concat = producers.get(f"present.{layer}.key"), producers.get(f"present.{layer}.value")
    if key_concat is None or value_concat is None or key_concat.op_type != "Concat" or value_concat.op_type != "Concat":
        return None
    if not key_concat.input[0].startswith("past_key_values.") or not value_concat.input[0].startswith("past_key_values."):
        return None

    def split_of(concat):
        transpose = producers.get(concat.input[1])
        reshape = producers.get(transpose.input[0]) if transpose is not None and transpose.op_type == "Transpose" else None
        source = producers.get(reshape.input[0]) if reshape is not None and reshape.op_type == "Reshape" else None
        return (source, list(source.output).index(reshape.input[0])) if source is not None and source.op_type == "Split" else (None, -1)

    (split, k_index), (split_v, v_index) = split_of(key_concat), split_of(value_concat)
    if split is None or split is not split_v or (k_index, v_index) != (1, 2) or len(split.output) != 3:
        return None
    # softmax(...) @ present.value -> Transpose -> Reshape: the merged heads c_proj reads.
    weighted = next((n for n in readers.get(value_concat.output[0], []) if n.op_type == "MatMul"), None)
    transpose = _only_consumer(readers, weighted.output[0], "Transpose") if weighted is not None else None
    # The Transpose is also read by the Shape nodes that compute the Reshape's target shape.
    merge = next((n for n in readers.get(transpose.output[0], []) if n.op_type == "Reshape"), None) if transpose else None
    if merge is None:
        return None
    return split, key_concat, value_concat, merge


def drop_linear_reshapes(model) -> int:
    """Reshape(x, (-1, E)) -> MatMul -> [Add] -> Reshape(., (B, S, N)) becomes MatMul(x) -> [Add]; returns how many.

    transformers' Conv1D flattens its input to 2-D for `addmm` and restores the shape after; MatMul
    broadcasts over the leading dimensions, so both Reshapes (and the shape arithmetic feeding them)
    can go. Only the Reshapes inside a Conv1D's own scope (c_attn, c_proj, c_fc) are touched. Run it
    after `gemm_to_matmul` and before quantizing (the quantizers rewrite MatMul).
    """
    graph = model.graph
    producers, readers = _producers(model), _consumers(model)
    renames: dict[str, str] = {}
    drop = set()
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        flatten = producers.get(node.input[0])
        if flatten is None or flatten.op_type != "Reshape" or len(readers.get(flatten.output[0], [])) != 1:
            continue
        scope = flatten.name.rsplit("/", 1)[0]
        if scope.rsplit("/", 1)[-1] not in CONV1D_SCOPES:
            continue  # only the Conv1D (c_attn, c_proj, c_fc) wrappers
        tail = node
        add = _only_consumer(readers, node.output[0], "Add")
        if add is not None:
            tail = add
        restore = _only_consumer(readers, tail.output[0], "Reshape")
        if restore is None or restore.name.rsplit("/", 1)[0] != scope:
            continue
        node.input[0] = flatten.input[0]
        renames[restore.output[0]] = tail.output[0]
        drop.update({id(flatten), id(restore)})
    if not drop:
        return 0
    kept = [n for n in graph.node if id(n) not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    outputs = {o.name for o in graph.output}
    assert not outputs & set(renames), "a graph output was a Conv1D's restored shape"
    del graph.node[:]
    graph.node.extend(kept)
    prune(model)
    return len(drop) // 2


def prune(model) -> int:
    """Remove nodes whose outputs nothing reads (graph outputs count as read), and the initializers no node reads;
    returns how many nodes went. Walks back from the outputs, so the nodes need not be in topological order (onnx/head.py
    appends its Slice after lm_head, which reads it)."""
    graph = model.graph
    producers = _producers(model)
    needed, wanted = set(), [o.name for o in graph.output]
    while wanted:
        name = wanted.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producers.get(name)
        if node is not None:
            wanted += [i for i in node.input if i]
    kept = [node for node in graph.node if any(name in needed for name in node.output)]
    removed = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return removed


def op_counts(model) -> Counter:
    return Counter(node.op_type for node in model.graph.node)
