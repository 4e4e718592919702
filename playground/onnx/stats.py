"""The per-token statistics inside the graph: each position's top-k logits and their ids, log-sum-exp and mean
logit under its own distribution (entropy = lse - mean), computed right after `lm_head` in the same run.

Why in the graph: after a decoding step has streamed the model's weights through the CPU caches, every Python
and numpy call starts cold (docs/onnx.md#loop-overhead), and the statistics were a dozen such calls per token.
Here they are a handful of kernels on logits that are still in cache, and the loop reads a few small arrays.

The top-k is exact without a full sort (onnxruntime's TopK over 50,257 logits alone costs ~450 us): the
vocabulary is cut into blocks of about `BLOCK` logits, the k blocks with the largest maxima hold the k largest
logits (any other block's max is below all of them), and TopK runs on those k blocks' logits. The chosen
blocks are put in id order first, so equal logits rank lower id first, as `np.argmax` and a stable sort do.
"""

from __future__ import annotations

import numpy as np

from .fusion import set_metadata

BLOCK = 64  # the block width aimed at: a divisor of the vocabulary near it when there is one (no padding)
OUTPUTS = ("top_logits", "top_ids", "lse", "mean_logit")  # (N, T, k) float, (N, T, k) int64, (N, T), (N, T)
TOP_K_INPUT = "top_k"  # int64 (1,): how many alternatives to return, 1 .. vocabulary


def block_width(vocab: int) -> int:
    """The divisor of `vocab` between BLOCK / 4 and 2 * BLOCK nearest BLOCK (GPT-2's 50,257: 29; 21,128: 76), else
    BLOCK (the last block is then padded)."""
    divisors = [w for w in range(BLOCK // 4, 2 * BLOCK + 1) if vocab % w == 0]
    return min(divisors, key=lambda w: abs(w - BLOCK), default=BLOCK)


def add_statistics(model, logits: str = "logits"):
    """Append the statistics of `logits` (N, T, V), V static, to an onnx.ModelProto as the graph outputs OUTPUTS,
    with the input `top_k`."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    output = next(o for o in graph.output if o.name == logits)
    vocab = output.type.tensor_type.shape.dim[2].dim_value
    if not vocab:
        raise ValueError("the logits' vocabulary dimension must be static")
    size = block_width(vocab)
    blocks = -(-vocab // size)
    p = "stats/"

    def const(name: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), p + name))
        return p + name

    block_shape = const("block_shape", np.array([0, 0, blocks, size], dtype=np.int64))
    flat_shape = const("flat_shape", np.array([0, 0, -1], dtype=np.int64))
    last = const("last", np.array([-1], dtype=np.int64))
    width = const("width", np.array(size, dtype=np.int64))
    padded = logits
    padding = []
    if blocks * size != vocab:  # onnxruntime's Pad copies slowly (~100 us for GPT-2's logits): only when needed
        pads = const("pads", np.array([0, 0, 0, 0, 0, blocks * size - vocab], dtype=np.int64))
        # Padding below every logit, finite: its exp is 0, and 0 times it is 0 (not NaN, as with -inf).
        floor = const("floor", np.array(np.finfo(np.float32).min, dtype=np.float32))
        padded = p + "padded"
        padding = [helper.make_node("Pad", [logits, pads, floor], [padded], mode="constant")]  # (N, T, blocks * width)
    first = (const("zero", np.array([0], dtype=np.int64)), const("one", np.array([1], dtype=np.int64)))
    k = TOP_K_INPUT
    nodes = [
        # A vocabulary of fewer than k blocks: every block is a candidate (the caller keeps k <= V).
        helper.make_node("Min", [k, const("blocks", np.array([blocks], dtype=np.int64))], [p + "k_blocks"]),
        *padding,
        helper.make_node("Reshape", [padded, block_shape], [p + "blocked"]),  # (N, T, blocks, width)
        helper.make_node("ReduceMax", [p + "blocked", last], [p + "block_max"], keepdims=0),  # (N, T, blocks)
        helper.make_node("TopK", [p + "block_max", p + "k_blocks"], [p + "_", p + "best_blocks"]),  # (N, T, k) by value
        helper.make_node("TopK", [p + "best_blocks", p + "k_blocks"], [p + "blocks_in_order", p + "__"], largest=0),  # by id
        helper.make_node("Unsqueeze", [p + "blocks_in_order", last], [p + "block_index"]),  # (N, T, k, 1)
        helper.make_node("GatherND", [p + "blocked", p + "block_index"], [p + "candidates4"], batch_dims=2),
        helper.make_node("Reshape", [p + "candidates4", flat_shape], [p + "candidates"]),  # (N, T, k * width)
        helper.make_node("TopK", [p + "candidates", k], ["top_logits", p + "slot"]),  # (N, T, k), lower slot on ties
        helper.make_node("Div", [p + "slot", width], [p + "slot_block"]),
        helper.make_node("Mod", [p + "slot", width], [p + "slot_offset"]),
        helper.make_node("GatherElements", [p + "blocks_in_order", p + "slot_block"], [p + "id_block"], axis=2),
        helper.make_node("Mul", [p + "id_block", width], [p + "id_base"]),
        helper.make_node("Add", [p + "id_base", p + "slot_offset"], ["top_ids"]),  # (N, T, k) vocabulary ids
        helper.make_node("Slice", ["top_logits", first[0], first[1], last], [p + "max"]),  # (N, T, 1)
        helper.make_node("Unsqueeze", [p + "max", last], [p + "max4"]),  # (N, T, 1, 1)
        helper.make_node("Sub", [p + "blocked", p + "max4"], [p + "shifted"]),
        helper.make_node("Exp", [p + "shifted"], [p + "unnormalised"]),  # Z * p, (N, T, blocks, width)
        # Sums of sums, block by block: float32 error ~1e-7 (one flat float32 sum over 50k terms: ~1e-5).
        helper.make_node("ReduceSum", [p + "unnormalised", last], [p + "z_blocks"], keepdims=0),
        helper.make_node("ReduceSum", [p + "z_blocks", last], [p + "z"], keepdims=0),  # (N, T)
        helper.make_node("Mul", [p + "unnormalised", p + "blocked"], [p + "weighted_terms"]),
        helper.make_node("ReduceSum", [p + "weighted_terms", last], [p + "weighted_blocks"], keepdims=0),
        helper.make_node("ReduceSum", [p + "weighted_blocks", last], [p + "weighted"], keepdims=0),  # Z * sum p x
        helper.make_node("Log", [p + "z"], [p + "log_z"]),
        helper.make_node("Squeeze", [p + "max", last], [p + "max2"]),
        helper.make_node("Add", [p + "log_z", p + "max2"], ["lse"]),
        helper.make_node("Div", [p + "weighted", p + "z"], ["mean_logit"]),
    ]
    for i, node in enumerate(nodes):
        node.name = f"{p}{i}_{node.op_type}"
    graph.node.extend(nodes)
    set_metadata(model, "statistics", ",".join(OUTPUTS))
    graph.input.append(helper.make_tensor_value_info(k, TensorProto.INT64, [1]))
    graph.output.extend([
        helper.make_tensor_value_info("top_logits", TensorProto.FLOAT, ["batch_size", "sequence_length", "top_k"]),
        helper.make_tensor_value_info("top_ids", TensorProto.INT64, ["batch_size", "sequence_length", "top_k"]),
        helper.make_tensor_value_info("lse", TensorProto.FLOAT, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("mean_logit", TensorProto.FLOAT, ["batch_size", "sequence_length"]),
    ])
    return model
