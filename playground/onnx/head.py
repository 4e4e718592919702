"""The first token first: the decoder scores only the prompt's last position, and a head graph scores the others.

Before a run can choose its first token it needs the distribution at the prompt's last position only; the
others are there to score the prompt (each token's probability, rank, alternatives). Computing `lm_head` and the
statistics (onnx/stats.py) over every position first cost ~30% of time to first token (measured: prefill of the
last position only took 0.69 / 0.73 / 0.69 of a full one at 32 / 128 / 512 prompt tokens, int8, 2 cores). So:

- `add_logits_from`: the decoder takes `logits_from` (int64 (1,)) and computes `lm_head` (and the statistics after
  it) only from that position on: 0 for every decoding step and for a prompt scored whole, T - 1 for the prompt's
  last position alone. It also returns `hidden`, the input of `lm_head` at every position (N, T, E).
- `extract_head`: a second graph made of the decoder's own nodes from `hidden` to the logits and the statistics (the
  same weights, quantized the same way), which scores the other positions after the first token has gone out. Being
  the same nodes, it gives the prompt records a whole prefill gives (tests/test_first_token.py compares them).

onnx.utils.Extractor would do the extraction but needs shape information for its cut, which shape inference does not
give through the contrib ops of a quantized graph (MatMulNBits, MultiHeadAttention): the walk is written here.
"""

from __future__ import annotations

import copy

import numpy as np

from .fusion import set_metadata
from .stats import OUTPUTS as STAT_OUTPUTS

FIRST_INPUT = "logits_from"  # int64 (1,): the first position whose logits the decoder computes
HIDDEN_OUTPUT = "hidden"  # (N, T, E): lm_head's input at every position, for the head graph
HEAD_FILE = "head.onnx"
LOGITS_LENGTH = "logits_length"  # the logits' position dimension: T - logits_from


def lm_head_node(model):
    """The node that writes the logits (MatMul or MatMulNBits)."""
    return next(n for n in model.graph.node if "logits" in n.output)


def add_logits_from(model):
    """Give the decoder the input `logits_from` and the output `hidden` (see the module's doc); call it before
    `add_statistics`, which then reads the sliced logits."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    head = lm_head_node(model)
    hidden = head.input[0]
    graph.initializer.extend([numpy_helper.from_array(np.array([np.iinfo(np.int64).max], dtype=np.int64), "first/end"),
                              numpy_helper.from_array(np.array([1], dtype=np.int64), "first/axis")])
    graph.node.extend([
        helper.make_node("Slice", [hidden, FIRST_INPUT, "first/end", "first/axis"], ["first/sliced"], name="first/Slice"),
        helper.make_node("Identity", [hidden], [HIDDEN_OUTPUT], name="first/hidden_Identity"),
    ])
    head.input[0] = "first/sliced"
    graph.input.append(helper.make_tensor_value_info(FIRST_INPUT, TensorProto.INT64, [1]))
    graph.output.append(helper.make_tensor_value_info(HIDDEN_OUTPUT, TensorProto.FLOAT, ["batch_size", "sequence_length", "hidden_size"]))
    set_metadata(model, "logits_from", FIRST_INPUT)
    return model


def name_logits_length(model) -> None:
    """The position dimension of the logits and statistics is T - logits_from, not the input's T: named so."""
    for output in model.graph.output:
        if output.name == "logits" or output.name in STAT_OUTPUTS:
            dim = output.type.tensor_type.shape.dim[1]
            dim.ClearField("dim_value")
            dim.dim_param = LOGITS_LENGTH


def extract_head(model):
    """The head graph of a decoder that went through `add_logits_from` and `add_statistics`: input `hidden` (N, S, E),
    `logits_from` and (when the decoder computes statistics) `top_k`; outputs the logits and the statistics."""
    from onnx import helper

    graph = model.graph
    outputs = [o for o in graph.output if o.name == "logits" or o.name in STAT_OUTPUTS]
    hidden = next(n for n in graph.node if n.name == "first/hidden_Identity").input[0]
    producers = {name: node for node in graph.node for name in node.output}
    wanted, seen = [o.name for o in outputs], set()
    while wanted:  # every node between `hidden` and the outputs
        name = wanted.pop()
        node = producers.get(name)
        if name == hidden or node is None or id(node) in seen:
            continue
        seen.add(id(node))
        wanted += list(node.input)
    nodes = [copy.deepcopy(n) for n in graph.node if id(n) in seen]  # in the decoder's (topological) order
    read = {name for n in nodes for name in n.input}
    initializers = [i for i in graph.initializer if i.name in read]
    inputs = [i for i in graph.input if i.name in read]
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == hidden:
                node.input[i] = HIDDEN_OUTPUT
    head_input = helper.make_tensor_value_info(HIDDEN_OUTPUT, 1, ["batch_size", "sequence_length", "hidden_size"])  # float
    head = helper.make_model(helper.make_graph(nodes, "head", [head_input, *inputs], outputs, initializers),
                             opset_imports=list(model.opset_import), ir_version=model.ir_version)
    for entry in model.metadata_props:
        set_metadata(head, entry.key, entry.value)
    return head


