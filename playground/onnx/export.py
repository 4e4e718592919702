"""ONNX exports: optimum export with KV cache, quantized variants, manifests, verification, atomic install.

`python -m playground.onnx.export --model M --variant V` builds one ahead of time; the ONNX backend calls
`ensure_export` and gets a verified folder, rebuilding whatever is missing, stale or corrupt.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import DeviceError, PlaygroundError
from ..hooks import capture_input
from ..models import ModelSource, file_sha256, load_torch_model, resolve_model, source_fingerprint
from ..paths import exports_dir
from .fusion import drop_linear_reshapes, fuse_attention
from .head import HEAD_FILE, add_logits_from, extract_head, name_logits_length
from .prompt import PROMPT_FILE, write_prompt_graph
from .stats import add_statistics

VARIANTS = ("fp32", "fp16", "int8", "int4")
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"  # decoder with past key/values: prefill and every decoding step
ATTENTION_FILE = "attention.onnx"  # no cache, also returns every layer's attention probabilities and residual stream
FINAL_RESIDUAL = "final_residual"  # the analysis graph's last residual, before the final layer norm
FORMAT_VERSION = 18  # bump when the export recipe changes: older exports are then rebuilt (4: int4 shares the embedding;
# 5: hidden states; 6: fused attention and no Conv1D reshapes in the decoder; 7: its cache written in place, onnx/fusion.py;
# 8: the per-token statistics computed in the graph, onnx/stats.py; 9: int8 and int4 weight-only in blocks, NBITS_RECIPES;
# 10: the decoder scores from `logits_from` on and a head graph scores the rest, onnx/head.py; 11: int8 and int4 kept
# their KV cache in int8; 12: they keep it in fp32 again, INT8_KV_CACHE_VARIANTS; 13: int8 and int4 score prompts with
# prompt.onnx, onnx/prompt.py, and int8 is in blocks of 128; 14: their KV cache is int8 again, prompt.onnx filling it;
# 15: int4's is fp32 again, as it runs on CUDA too, INT8_KV_CACHE_VARIANTS; 16: int8's blocks have zero points,
# lm_head's are of 16 and the token embedding is fp16, NBITS_RECIPES; 17: int4's KV cache is int8 on the CPU,
# INT8_KV_CACHE_VARIANTS; 18: prompt.onnx quantizes the rows into its two projections over their own range, onnx/prompt.py)
OPSET = 18  # optimum's recommended minimum for GPT-2
# How closely a fresh fp32 export must match PyTorch on the probe text (max |logit difference|).
FP32_VERIFY_ATOL = 1e-3
FP32_ATTENTION_ATOL = 1e-4
FP32_HIDDEN_RTOL = 1e-4  # max |difference| over max |value| of the residual stream
PROBE_TEXT = "The return value of a function is the value of the expression after the return statement."


@dataclass(frozen=True)
class VariantSpec:
    name: str
    runs_on: tuple[str, ...]  # "cpu", "cuda"
    description: str


VARIANT_SPECS = {
    "fp32": VariantSpec("fp32", ("cpu", "cuda"), "full precision, the reference"),
    "fp16": VariantSpec("fp16", ("cuda",), "half precision weights and compute (LayerNorm, Add, Gelu kept in fp32)"),
    "int8": VariantSpec("int8", ("cpu",), "weight-only int8 of every MatMul weight (MatMulNBits, blocks of 128 with zero "
                                          "points, lm_head's of 16); the token embedding in fp16; prompts in int8 GEMMs "
                                          "(prompt.onnx); an int8 KV cache"),
    "int4": VariantSpec("int4", ("cpu", "cuda"), "weight-only int4 of the blocks' MatMul weights (MatMulNBits, blocks of 64, "
                                                 "symmetric) and int8 lm_head (blocks of 128), which the token embedding "
                                                 "reads (GatherBlockQuantized); on the CPU prompts in int8 GEMMs "
                                                 "(prompt.onnx) and an int8 KV cache"),
}


class Blocks(NamedTuple):
    """One MatMulNBits quantization: bits per weight, weights per block, and whether blocks are symmetric (no zero
    points)."""
    bits: int
    block: int
    symmetric: bool


class Recipe(NamedTuple):
    blocks: Blocks  # the transformer blocks' MatMuls
    head: Blocks  # lm_head's
    embedding: str  # the token embedding: "lm_head" reads lm_head's quantized weight, "fp16" is its own table


# Weight-only quantization in blocks along each weight row's input dimension, one fp32 scale per block (as llama.cpp).
# A Recipe per variant: the transformer blocks' MatMuls, lm_head's, and the token embedding (in int4 it reads
# lm_head's quantized weight). lm_head gets 8 bits in int4 as llama.cpp's Q4_0 keeps its output layer at Q6_K: on
# the demo model a 4-bit lm_head made KL to fp32 7.7x Q4_0's (docs/onnx.md#quantization-against-llamacpps).
# accuracy_level=4 lets the CPU kernel compute in int8: about 2.5x faster than the default here, and most of int8's
# error: it quantizes the activations too, one scale per block, so a block's largest activation sets the step of the
# others. With fp32 compute instead, blocks of 128 would give KL 0.00003 / 0.00002 on the English / Chinese demo
# models, but decode at 6 tokens/s.
# int8 (format 16): the blocks' weights in blocks of 128 with zero points (asymmetric: the 256 steps span each block's
# own range), lm_head's in blocks of 16 with zero points (its activations were most of the error left), and the token
# embedding its own fp16 table (read from lm_head's blocks, it cost KL 0.000006). Measured with throwaway scripts on
# the decoder alone: KL as scripts/quant_quality.py measures it (English / Chinese demo models), decoding random:gpt2
# (2 threads, one run, the recipes interleaved):
#   blocks of 32, symmetric (formats 9-12):                       KL 0.000047 / 0.000055, 130 tokens/s
#   blocks of 128, symmetric (formats 13-15):                     KL 0.000068 / 0.000083, 163 tokens/s
#   blocks of 128, lm_head of 32, zero points, fp16 embedding:    KL 0.000048 / 0.000061, 156 tokens/s
#   blocks of 128, lm_head of 16, zero points, fp16 embedding:    KL 0.000041 / 0.000052, 149 tokens/s (format 16)
NBITS_RECIPES = {
    "int8": Recipe(Blocks(8, 128, False), Blocks(8, 16, False), "fp16"),
    "int4": Recipe(Blocks(4, 64, True), Blocks(8, 128, True), "lm_head"),
}


def check_variant_runs_on(variant: str, device: str) -> None:
    """Refuse a variant the hardware cannot run, naming one that would."""
    if variant not in VARIANT_SPECS:
        raise PlaygroundError(key="variant.unknown", field="variant", name=variant, available=", ".join(VARIANTS))
    spec = VARIANT_SPECS[variant]
    if device not in spec.runs_on:
        alternatives = [v for v, s in VARIANT_SPECS.items() if device in s.runs_on]
        raise DeviceError(key="onnx.needs_gpu" if spec.runs_on == ("cuda",) else "onnx.needs_cpu", field="variant",
                          variant=variant, device=device.upper(), alternatives=", ".join(alternatives))


# --- the export's folder name and the libraries that built it ------------------------------------


def model_slug(source: ModelSource) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", source.name).strip("-") or "model"


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime-gpu")}


# --- graph surgery ------------------------------------------------------------------------------


def gemm_to_matmul(model) -> int:
    """Rewrite Gemm(A, W, b) with a constant W as MatMul(A, W) + b; returns how many were rewritten.

    GPT-2's Conv1D layers export as Gemm, which onnxruntime's dynamic int8 and MatMulNBits
    quantizers skip; as MatMul they get quantized. The rewrite is exact (alpha = beta = 1, no transA).
    """
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    new_nodes, rewritten = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type == "Gemm"
            and node.input[1] in inits
            and attrs.get("alpha", 1.0) == 1.0
            and attrs.get("beta", 1.0) == 1.0
            and not attrs.get("transA", 0)
        ):
            weight = inits[node.input[1]]
            if attrs.get("transB", 0):
                arr = numpy_helper.to_array(weight).T.copy()
                weight.CopyFrom(numpy_helper.from_array(arr, weight.name))
            matmul_out = node.output[0] + "_matmul" if len(node.input) > 2 else node.output[0]
            new_nodes.append(helper.make_node("MatMul", [node.input[0], node.input[1]], [matmul_out], name=node.name + "_MatMul"))
            if len(node.input) > 2 and node.input[2]:
                new_nodes.append(helper.make_node("Add", [matmul_out, node.input[2]], [node.output[0]], name=node.name + "_Add"))
            rewritten += 1
        else:
            new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return rewritten


def untie_lm_head(model) -> bool:
    """Give the lm_head MatMul its own transposed weight initializer so a quantizer can quantize it.

    In the fp32 export lm_head reads Transpose(wte) (the tie is kept, one copy on disk). A quantized
    variant stores a quantized copy of that matrix instead, which is far smaller than the fp32 one.
    """
    from onnx import numpy_helper

    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "MatMul" or "logits" not in node.output:
            continue
        source = producers.get(node.input[1])
        if source is None or source.op_type != "Transpose" or source.input[0] not in inits:
            return False
        transposed = numpy_helper.to_array(inits[source.input[0]]).T.copy()
        name = "lm_head.weight_transposed"
        model.graph.initializer.append(numpy_helper.from_array(transposed, name))
        node.input[1] = name
        model.graph.node.remove(source)
        return True
    return False


def share_embedding_with_lm_head(model, token_embedding: str) -> bool:
    """After MatMulNBits quantization: let the token-embedding Gather read lm_head's quantized weight.

    GPT-2 ties lm_head to the token embedding (wte, (V, E)). MatMulNBits stores lm_head's weight as
    B (N=V, K/block, block * bits/8) uint8 (4 bits: two values per byte, low nibble first) with an
    implicit zero point (8 or 128) and scales (V, K/block): row v of B is wte[v] quantized block-wise
    along E. That is exactly GatherBlockQuantized's layout for data (V, E * bits/8) uint8 with the same
    bits, quantize_axis=1, so a Reshape view of the same initializer serves both, and the fp32 wte (a
    quarter of GPT-2 small: 154 MB) leaves the file. Returns False (graph untouched) when lm_head is not
    a MatMulNBits over wte in whole blocks.
    """
    from onnx import helper, numpy_helper
    import numpy as np

    inits = {i.name: i for i in model.graph.initializer}
    head = next((n for n in model.graph.node if n.op_type == "MatMulNBits" and "logits" in n.output), None)
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == token_embedding]
    if head is None or not gathers or token_embedding not in inits:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    vocab, embd = inits[token_embedding].dims
    block = attrs["block_size"]
    bits = attrs.get("bits", 4)
    if (attrs["N"], attrs["K"]) != (vocab, embd) or bits not in (4, 8) or embd % block or len(head.input) > 3 and head.input[3]:
        return False  # transposed differently, padded blocks, or explicit zero points: keep the fp32 embedding
    data_shape = numpy_helper.from_array(np.array([vocab, embd * bits // 8], dtype=np.int64), "wte_q_shape")
    scales_shape = numpy_helper.from_array(np.array([vocab, embd // block], dtype=np.int64), "wte_q_scales_shape")
    model.graph.initializer.extend([data_shape, scales_shape])
    views = [
        helper.make_node("Reshape", [head.input[1], data_shape.name], ["wte_q"], name="wte_q_view"),  # (V, E * bits/8)
        helper.make_node("Reshape", [head.input[2], scales_shape.name], ["wte_q_scales"], name="wte_q_scales_view"),  # (V, E/block)
    ]
    for gather in gathers:
        index = list(model.graph.node).index(gather)
        model.graph.node.remove(gather)
        model.graph.node.insert(index, helper.make_node(
            "GatherBlockQuantized", ["wte_q", gather.input[1], "wte_q_scales"], list(gather.output), name=gather.name + "_Q",
            domain="com.microsoft", gather_axis=0, quantize_axis=1, block_size=block, bits=bits,
        ))
    for view in reversed(views):
        model.graph.node.insert(0, view)
    model.graph.initializer.remove(inits[token_embedding])
    return True


def half_embedding(model, token_embedding: str) -> bool:
    """Keep the token embedding apart from lm_head's quantized weight, in fp16: each Gather reads the fp16 table and a
    Cast returns fp32 (half of fp32's bytes on disk; a step reads one row). Returns False when there is no such table."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == token_embedding]
    if not gathers or token_embedding not in inits:
        return False
    table = numpy_helper.to_array(inits[token_embedding]).astype(np.float16)
    model.graph.initializer.remove(inits[token_embedding])
    model.graph.initializer.append(numpy_helper.from_array(table, f"{token_embedding}_fp16"))
    for gather in gathers:
        index = list(model.graph.node).index(gather)
        output = gather.output[0]
        gather.input[0], gather.output[0] = f"{token_embedding}_fp16", f"{output}_fp16"
        model.graph.node.insert(index + 1, helper.make_node("Cast", [gather.output[0]], [output], name=f"{gather.name}_Cast",
                                                            to=TensorProto.FLOAT))
    return True


def tied_embedding(model) -> str | None:
    """The token-embedding initializer lm_head reads through a Transpose (the tie), or None if it has its own weight."""
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "MatMul" and "logits" in node.output:
            source = producers.get(node.input[1])
            if source is not None and source.op_type == "Transpose" and "wte" in source.input[0]:
                return source.input[0]
    return None


def lm_head_is_tied(model) -> bool:
    """True when lm_head and the token embedding read one weight: the fp32 initializer (through a Transpose),
    or lm_head's quantized weight (see `share_embedding_with_lm_head`)."""
    return tied_embedding(model) is not None or any(n.name == "wte_q_view" for n in model.graph.node)


def weight_stats(model) -> dict:
    """What the graph holds: op counts, float parameters, and parameters stored quantized."""
    from collections import Counter

    from onnx import TensorProto, helper

    ops = Counter(n.op_type for n in model.graph.node)
    # MatMulNBits packs 8 / bits weights per uint8 byte.
    per_byte = {n.input[1]: 8 // next((helper.get_attribute_value(a) for a in n.attribute if a.name == "bits"), 4)
                for n in model.graph.node if n.op_type == "MatMulNBits"}
    zero_points = {n.input[3] for n in model.graph.node if n.op_type == "MatMulNBits" and len(n.input) > 3}
    float_params = quant_params = 0
    for init in model.graph.initializer:
        if init.name in zero_points:  # one per block, as the scales: not parameters
            continue
        count = 1
        for d in init.dims:
            count *= d
        if init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16):
            float_params += count if count > 1024 else 0
        elif init.data_type in (TensorProto.INT8, TensorProto.UINT8) and count > 1024:
            quant_params += count * per_byte.get(init.name, 1)
    total = float_params + quant_params
    return {
        "ops": {op: ops[op] for op in ("MatMul", "Gemm", "MatMulInteger", "MatMulNBits", "DynamicQuantizeLinear", "Gather",
                                       "GatherBlockQuantized", "MultiHeadAttention", "GroupQueryAttention")
                if ops.get(op)},
        "nodes": len(model.graph.node),
        "quantized_matmuls": ops.get("MatMulInteger", 0) + ops.get("MatMulNBits", 0),
        "float_matmuls": ops.get("MatMul", 0) + ops.get("Gemm", 0),
        "quantized_weight_fraction": round(quant_params / total, 3) if total else 0.0,
    }


# --- building -----------------------------------------------------------------------------------


def _export_fp32(model, out_dir: Path) -> Path:
    """optimum's decoder export with past key/values (one graph for prefill and decode)."""
    import warnings

    from optimum.exporters.onnx import onnx_export_from_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(model, out_dir, task="text-generation-with-past", opset=OPSET, do_validation=False)
    return out_dir / MODEL_FILE


def _export_attention_graph(model, out_dir: Path) -> Path:
    """optimum's decoder export without cache, with `hidden_states.{i}` and `attentions.{layer}` outputs (eager
    attention), and the last residual before the final layer norm as `final_residual`."""
    import warnings

    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.exporters.onnx.model_configs import GPT2OnnxConfig

    class WithAttentions(GPT2OnnxConfig):
        @property
        def outputs(self):
            # In the order the model returns them (logits, hidden_states, attentions): the names are given by position.
            outputs = super().outputs
            layers = self._normalized_config.num_layers
            for i in range(layers + 1):
                outputs[f"hidden_states.{i}"] = {0: "batch_size", 1: "sequence_length"}  # (B, T, d)
            for layer in range(layers):
                outputs[f"attentions.{layer}"] = {0: "batch_size", 2: "sequence_length", 3: "sequence_length"}  # (B, H, T, T)
            return outputs

    config = WithAttentions(model.config, task="text-generation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(model, out_dir, task="text-generation", custom_onnx_configs={"model": config},
                               model_kwargs={"output_attentions": True, "output_hidden_states": True}, opset=OPSET,
                               do_validation=False)
    _add_final_residual_output(out_dir / MODEL_FILE, f"hidden_states.{model.config.n_layer}")
    return out_dir / MODEL_FILE


def _add_final_residual_output(path: Path, normed_name: str) -> None:
    """Also output the input of the node that makes `normed_name` (the final layer norm) as FINAL_RESIDUAL.

    transformers' last hidden state has the final layer norm applied; the residual before it is what
    the other layers' entries are, so the logit lens treats every layer alike.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    producers = {output: node for node in model.graph.node for output in node.output}
    norm = producers[normed_name]
    while norm.op_type != "LayerNormalization":  # the normed output may come through a Reshape or an Identity
        norm = producers[norm.input[0]]
    model.graph.node.append(helper.make_node("Identity", [norm.input[0]], [FINAL_RESIDUAL], name="final_residual_Identity"))
    model.graph.output.append(helper.make_tensor_value_info(FINAL_RESIDUAL, TensorProto.FLOAT, ["batch_size", "sequence_length", None]))
    onnx.save(model, str(path))


def _make_variant(raw_path: Path, variant: str, out_path: Path, fuse: bool = True, head_path: Path | None = None,
                  kv_scales: list | None = None) -> None:
    """`variant` of optimum's graph at `raw_path`, written to `out_path`; `fuse=False` keeps optimum's attention and
    Conv1D reshapes (scripts/profile_ops.py compares the two). With `head_path`, the decoder scores from `logits_from`
    on and its head graph is written there (onnx/head.py: the first token first). With `kv_scales` (a quantized
    variant's decoder, see `kv_cache_scales`), its KV cache is int8 (onnx/fusion.py)."""
    import onnx

    model = onnx.load(str(raw_path))
    if variant == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # LayerNorm, residual Add and Gelu overflow in fp16: keep them in fp32 (casts are inserted).
        model = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=["LayerNormalization", "Add", "Gelu", "Pow", "Tanh", "Softmax"]
        )
        onnx.save(model, str(out_path))
        return
    gemm_to_matmul(model)
    if fuse:
        drop_linear_reshapes(model)
    if variant == "fp32":
        if fuse and fuse_attention(model):
            _add_outputs(model, head_path)
        onnx.save(model, str(out_path))
        return
    embedding = tied_embedding(model)
    untie_lm_head(model)
    if variant not in NBITS_RECIPES:
        raise AssertionError(variant)
    recipe = NBITS_RECIPES[variant]
    model = quantize_weights(model, recipe.blocks, recipe.head)
    if embedding is not None and recipe.embedding == "lm_head":
        share_embedding_with_lm_head(model, embedding)  # the fp32 token embedding (154 MB in GPT-2 small) leaves the file
    elif embedding is not None:
        half_embedding(model, embedding)
    # After quantizing: the quantizer's shape inference cannot see through the fused op.
    if fuse and fuse_attention(model, kv_scales):
        _add_outputs(model, head_path)
    onnx.save(model, str(out_path))


def _add_outputs(model, head_path: Path | None) -> None:
    """The statistics after lm_head (onnx/stats.py); with `head_path`, `logits_from` before it and the head graph
    written there (onnx/head.py)."""
    import onnx

    if head_path is None:
        add_statistics(model)
        return
    add_logits_from(model)
    add_statistics(model)
    name_logits_length(model)
    onnx.save(extract_head(model), str(head_path))


def quantize_weights(model, blocks: Blocks, head: Blocks):
    """Every MatMul with a constant weight as MatMulNBits: `blocks` for the transformer blocks', `head` for lm_head's
    (its block the largest power of two up to the one asked for that divides the hidden size, so the token embedding
    can read it in whole blocks)."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # one line per node otherwise

    def quantize(model, recipe: Blocks, **nodes):
        config = DefaultWeightOnlyQuantConfig(block_size=recipe.block, is_symmetric=recipe.symmetric, accuracy_level=4,
                                              bits=recipe.bits)
        quantizer = MatMulNBitsQuantizer(model, algo_config=config, **nodes)
        quantizer.process()
        return quantizer.model.model

    lm_head = next((n for n in model.graph.node if n.op_type == "MatMul" and "logits" in n.output), None)
    if lm_head is None:
        return quantize(model, blocks)
    model = quantize(model, blocks, nodes_to_exclude=[lm_head.name])
    hidden = next(i.dims[0] for i in model.graph.initializer if i.name == lm_head.input[1])  # lm_head's weight (E, V)
    block = next((b for b in (head.block, head.block // 2, head.block // 4, head.block // 8) if b >= 16 and hidden % b == 0),
                 head.block)
    # The quantizer's nodes_to_include adds to the MatMuls it quantizes anyway: lm_head is the only one left.
    return quantize(model, head._replace(block=block), nodes_to_include=[lm_head.name])


# The variants whose KV cache is int8 (onnx/fusion.py, GroupQueryAttention). Decoding at long contexts waits for the
# cache's bytes: at 896 tokens of context int8 kept 73-78% of its speed at 32 with it, against 61-66% with the fp32 cache
# (docs/benchmark.md#prompts-in-int8-gemms-2026-12-06). Format 12 had turned it off because onnxruntime's
# GroupQueryAttention over an int8 cache takes 2.5x fp32 attention's time on a prompt (24 against 9.7 ms a layer at 512
# tokens): since format 14 no prompt runs it, as the prompt graph attends in fp32 and returns the prompt's keys and values
# quantized (onnx/prompt.py `fill_int8_cache`). int4 too since format 17 (format 14 measured 67-68% at 896 against
# 48-53%, and 5-15% faster decoding at 32); it also runs on CUDA, whose GroupQueryAttention takes fp16 or bf16
# activations and no attention bias, so there the runner loads it with an fp32 cache (onnx/runtime.py
# `decoder_session`, onnx/fusion.py `float_cache`).
INT8_KV_CACHE_VARIANTS: tuple[str, ...] = ("int8", "int4")
KV_CALIBRATION_SEED = 0
KV_CALIBRATION_WINDOWS = 4  # windows of the model's context per calibration text
# Headroom above the largest key or value calibration saw, for text that reaches further: a value beyond it is clipped.
# Measured (docs/onnx.md): on the Chinese demo model, scored on Tang poems, 1.0 clipped (int8 KL 0.00064 against 0.00005
# with an fp32 cache), 1.25 nearly not (0.00010), 1.5 not (0.00006); on the English one all three gave 0.00005-6.
# Calibrated on random tokens alone, the scales came out 7-17% narrower than natural text needs (KL 0.00131).
KV_CALIBRATION_MARGIN = 1.5


def kv_calibration_texts() -> list[str]:
    """Natural text in English and Chinese that every installation has offline: Python's docstrings of a few builtins
    (not the ones scripts/quant_quality.py scores on), and the Chinese interface's own strings."""
    import pydoc

    from ..locales import STRINGS

    english = "\n".join(pydoc.plain(pydoc.render_doc(o)) for o in (set, tuple, int, float))
    return [english, "\n".join(STRINGS["zh-CN"].values())]


def kv_cache_scales(source: ModelSource, torch_model) -> list[tuple]:
    """Per layer, (key scale, value scale), each (H, D) float32: the largest |value| the model's keys and values reach
    per head and channel over calibration text, x KV_CALIBRATION_MARGIN / 127, so that the int8 cache holds that range.

    The text: the probe sentence, random tokens over the model's whole context (a key's range drifts along the
    positions, as GPT-2 adds a position embedding), and `kv_calibration_texts` in windows of the context. A value beyond
    the range at run time is clipped to it; the error the int8 cache costs is measured in docs/onnx.md
    (`python scripts/quant_quality.py`)."""
    import numpy as np
    import torch

    context, vocab = torch_model.config.n_positions, torch_model.config.vocab_size
    generator = torch.Generator().manual_seed(KV_CALIBRATION_SEED)
    texts = [probe_ids(source, context), torch.randint(0, vocab, (context,), generator=generator).tolist()]
    for text in kv_calibration_texts():
        ids = source.tokenizer(text)["input_ids"]
        texts += [ids[i:i + context] for i in range(0, min(len(ids), KV_CALIBRATION_WINDOWS * context), context)]
    peaks = None
    with torch.inference_mode():
        for ids in texts:
            cache = torch_model(torch.tensor([ids]), use_cache=True).past_key_values
            layers = [(layer.keys, layer.values) for layer in cache.layers]  # each (1, H, T, D)
            found = [tuple(x[0].float().abs().amax(dim=1).numpy() for x in pair) for pair in layers]  # (H, D) each
            peaks = found if peaks is None else [tuple(np.maximum(a, b) for a, b in zip(p, f)) for p, f in zip(peaks, found)]
    return [tuple(np.maximum(x * KV_CALIBRATION_MARGIN, 1e-8).astype(np.float32) / 127 for x in pair) for pair in peaks]


def probe_ids(source: ModelSource, context: int) -> list[int]:
    return source.tokenizer(PROBE_TEXT)["input_ids"][: max(2, context // 2)]


def _verify(source: ModelSource, torch_model, model_path: Path, variant: str) -> dict:
    """Load the export on the CPU (CUDA for fp16) and compare its prefill logits with PyTorch fp32."""
    import numpy as np
    import torch

    from .runtime import CUDA, AttentionRunner, OnnxRunner, cuda_provider_available

    providers = ["CPUExecutionProvider"]
    if variant == "fp16":
        if not (torch.cuda.is_available() and cuda_provider_available()):
            return {"checked": False, "reason": "fp16 runs on CUDA only and no GPU was available while exporting"}
        providers = [CUDA]
    ids = probe_ids(source, torch_model.config.n_positions)
    with torch.inference_mode():
        expected = torch_model(torch.tensor([ids])).logits[0].float().numpy()  # (T, V)
    with torch.inference_mode():
        expected_attention = torch.stack(torch_model(torch.tensor([ids]), output_attentions=True).attentions)[:, 0].numpy()
    with torch.inference_mode(), capture_input(torch_model.transformer.ln_f) as final:
        states = torch_model.transformer(torch.tensor([ids]), output_hidden_states=True).hidden_states
        expected_hidden = torch.stack([*states[:-1], final[0]])[:, 0].numpy()  # (L + 1, T, d)
    runner = OnnxRunner(model_path, providers=providers, context=torch_model.config.n_positions)
    if runner.provider not in providers:
        return {"checked": False, "reason": f"the {providers[0]} could not start ({runner.provider} ran instead)"}
    got, _ = runner.prefill(ids)  # by prompt.onnx where there is one (onnx/prompt.py)
    got = got.numpy()
    decoder = {}
    if runner.prompt_session is not None:  # and by the decoder's graph, which decoding steps run
        alone = OnnxRunner(model_path, providers=providers, context=torch_model.config.n_positions, prompt_graph=False)
        decoder = {"decoder_max_abs_logit_diff": round(float(np.abs(alone.prefill(ids)[0].numpy() - expected).max()), 6)}
    analysis = AttentionRunner(model_path.parent / ATTENTION_FILE, providers)
    attention = analysis.attention(ids)  # (L, H, T, T)
    hidden = analysis.hidden_states(ids)  # (L + 1, T, d)
    diff = float(np.abs(got - expected).max())
    attention_diff = float(np.abs(attention - expected_attention).max())
    hidden_diff = float(np.abs(hidden - expected_hidden).max() / np.abs(expected_hidden).max())
    agreement = float((got.argmax(-1) == expected.argmax(-1)).mean())
    if not np.isfinite(got).all() or not np.isfinite(attention).all() or not np.isfinite(hidden).all():
        raise PlaygroundError(key="onnx.non_finite", variant=variant)
    if variant == "fp32" and (diff > FP32_VERIFY_ATOL or attention_diff > FP32_ATTENTION_ATOL or hidden_diff > FP32_HIDDEN_RTOL):
        raise PlaygroundError(key="onnx.differs", logits=diff, attention=attention_diff, hidden=hidden_diff)
    return {"checked": True, "probe_tokens": len(ids), "max_abs_logit_diff": round(diff, 6),
            "max_abs_attention_diff": round(attention_diff, 7), "max_rel_hidden_diff": float(f"{hidden_diff:.3g}"),
            "top1_agreement": round(agreement, 4), **decoder}


def export_folder(source: ModelSource, variant: str, root: Path | None = None) -> Path:
    return Path(root or exports_dir()) / model_slug(source) / variant


def read_valid_manifest(folder: Path, source: ModelSource, variant: str, fingerprint: str | None = None) -> dict | None:
    """The manifest of a complete, matching, intact export, or None if anything is off (then it is rebuilt)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if (
        manifest.get("format_version") != FORMAT_VERSION
        or manifest.get("variant") != variant
        or manifest.get("source", {}).get("sha256") != (fingerprint or source_fingerprint(source))
    ):
        return None
    for name, meta in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != meta["bytes"] or file_sha256(path) != meta["sha256"]:
            return None
    return manifest if manifest.get("files") else None


def ensure_export(source: ModelSource, variant: str, root: Path | None = None, progress: bool = True) -> tuple[Path, dict]:
    """A verified export of `source` in `variant`: reused when its manifest matches, else (re)built.

    The build happens in a temporary folder beside the target and is renamed into place only after
    it loaded and matched PyTorch; a crash mid-way leaves the old export (or nothing), never half of one.
    """
    import onnx
    from tqdm.auto import tqdm

    if variant not in VARIANT_SPECS:
        raise PlaygroundError(key="variant.unknown", field="variant", name=variant, available=", ".join(VARIANTS))
    folder = export_folder(source, variant, root)
    fingerprint = source_fingerprint(source)
    manifest = read_valid_manifest(folder, source, variant, fingerprint)
    if manifest is not None:
        return folder / MODEL_FILE, manifest

    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stages = ["export with optimum (decoder and attention graphs)", f"make {variant}", "verify against PyTorch", "install"]
    bar = tqdm(total=len(stages), desc=f"ONNX export {source.name} {variant}", unit="stage", disable=not progress)
    with tempfile.TemporaryDirectory(prefix=f".{variant}-", dir=folder.parent) as tmp:
        tmp = Path(tmp)
        bar.set_postfix_str(stages[0])
        torch_model = load_torch_model(source)  # loaded once: both exports and the verification use it
        raw = _export_fp32(torch_model, tmp / "raw")
        raw_attention = _export_attention_graph(torch_model, tmp / "raw-attention")
        bar.update()
        bar.set_postfix_str(stages[1])
        build = tmp / variant
        build.mkdir()
        kv_scales = kv_cache_scales(source, torch_model) if variant in INT8_KV_CACHE_VARIANTS else None
        _make_variant(raw, variant, build / MODEL_FILE, head_path=build / HEAD_FILE, kv_scales=kv_scales)
        # The quantized variants' prompt pass in int8 GEMMs (onnx/prompt.py); over an int8 cache it is made from the
        # fp32-cache graph and returns the cache for the runner to copy in.
        prompt_source = build / MODEL_FILE
        if kv_scales is not None:
            prompt_source = tmp / "fp32-cache" / MODEL_FILE
            prompt_source.parent.mkdir()
            _make_variant(raw, variant, prompt_source, head_path=prompt_source.parent / HEAD_FILE)
        write_prompt_graph(prompt_source, build / PROMPT_FILE, kv_scales)
        _make_variant(raw_attention, variant, build / ATTENTION_FILE)
        bar.update()
        bar.set_postfix_str(stages[2])
        verification = _verify(source, torch_model, build / MODEL_FILE, variant)
        del torch_model
        bar.update()
        bar.set_postfix_str(stages[3])
        graph = onnx.load(str(build / MODEL_FILE), load_external_data=False)
        files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(build.iterdir()) if p.is_file()}
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": {"name": source.name, "location": source.location, "sha256": fingerprint},
            "variant": variant,
            "description": VARIANT_SPECS[variant].description,
            "opset": OPSET,
            "files": files,
            "size_mb": round(sum(f["bytes"] for f in files.values()) / 1e6, 2),
            "lm_head_tied": lm_head_is_tied(graph),
            "weights": weight_stats(graph),
            "verification": verification,
            "versions": library_versions(),
            "export_seconds": round(time.perf_counter() - started, 1),
        }
        (build / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        build.rename(folder)
        bar.update()
    bar.close()
    return folder / MODEL_FILE, manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m playground.onnx.export", description="Build a verified ONNX export ahead of time.")
    parser.add_argument("--model", default="demo", help="hub id, local folder, or demo (default: demo)")
    parser.add_argument("--variant", default="fp32", choices=VARIANTS)
    args = parser.parse_args(argv)
    try:
        source = resolve_model(args.model)
        path, manifest = ensure_export(source, args.variant)
    except PlaygroundError as exc:
        print(f"error: {exc}")
        return 2
    print(json.dumps({k: manifest[k] for k in ("variant", "size_mb", "lm_head_tied", "weights", "verification", "export_seconds")}, indent=2))
    print(f"Export ready: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
