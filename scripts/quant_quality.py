"""How close each quantized export is to PyTorch fp32, with and without the attention fusion, and llama.cpp's
quantizations of the same model beside them:

    python scripts/quant_quality.py [--model demo] [--windows 6] [--text tang300] [--llama-python PY --llama-src DIR]

Text: Python's own docstrings (pydoc of str, list, dict, os.path, open), or with `--text tang300` the Tang poems of
Debian's fortunes-zh (for the Chinese demo model, which was trained on them), cut into `--windows` windows of
the model's context. Per variant, built from one optimum export both ways (onnx/export.py's
`_make_variant`: optimum's graph; fused with an fp32 cache; fused with the int8 cache the export now builds, its scales
from `kv_cache_scales`; and the prompt graph made from the fused one, onnx/prompt.py): mean KL(PyTorch || ONNX) per
position, top-1 agreement and file size.
With llama.cpp (the benchmark's peer options), its f32, Q8_0 and Q4_0 GGUF files of the same model are
scored the same way on llama.cpp's own logits.
"""

import argparse
import os
import pydoc
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from playground.bench.peers import PEER_VARIANTS, PeerConfig, missing_reason, peer_logits  # noqa: E402
from playground.models import load_torch_model, resolve_model  # noqa: E402
from playground.onnx.export import _export_fp32, _make_variant, export_folder, kv_cache_scales  # noqa: E402
from playground.onnx.prompt import write_prompt_graph  # noqa: E402
from playground.onnx.runtime import OnnxRunner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--text", choices=("pydoc", "tang300"), default="pydoc", help="what to score on")
    parser.add_argument("--llama-python", default=sys.executable, help="a python with llama-cpp-python (llama.cpp rows)")
    parser.add_argument("--llama-src", default=None, help="a llama.cpp source tree holding convert_hf_to_gguf.py")
    args = parser.parse_args()
    source = resolve_model(args.model)
    model = load_torch_model(source)
    context = model.config.n_positions
    if args.text == "tang300":
        from playground.training.corpus_zh import FORTUNES_DIR, read_fortune_file

        text = "\n".join(read_fortune_file(FORTUNES_DIR / "tang300"))
    else:
        text = "\n".join(pydoc.plain(pydoc.render_doc(o)) for o in (str, list, dict, os.path, open))
    ids = source.tokenizer(text)["input_ids"]
    windows = [ids[i:i + context] for i in range(0, context * args.windows, context) if len(ids) >= i + context]
    with torch.inference_mode():
        reference = [torch.log_softmax(model(torch.tensor([w])).logits[0].float(), -1).numpy() for w in windows]  # (T, V)

    def score(logits) -> tuple[float, float]:
        """Mean KL(PyTorch || them) per position and top-1 agreement, over the windows' logits (T, V) each."""
        kl, top1 = [], []
        for want, theirs in zip(reference, logits):
            got = torch.log_softmax(torch.as_tensor(theirs), -1).numpy()  # (T, V)
            kl.append(float((np.exp(want) * (want - got)).sum(-1).mean()))
            top1.append(float((want.argmax(-1) == got.argmax(-1)).mean()))
        return float(np.mean(kl)), float(np.mean(top1))

    def compare(path: Path) -> tuple[float, float]:
        runner = OnnxRunner(path, ["CPUExecutionProvider"], context=context, prompt_graph=False)  # this graph alone
        return score(runner.prefill(window)[0] for window in windows)

    print(f"{source.name}: {len(windows)} windows of {context} tokens\n| variant | graph | KL to fp32 | top-1 agreement | MB |\n"
          "|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        raw = _export_fp32(model, Path(tmp) / "raw")
        scales = kv_cache_scales(source, model)
        graphs = (("optimum's", False, None), ("fused, fp32 cache", True, None), ("fused, int8 cache", True, scales))
        for variant in ("int8", "int4"):
            for graph, fuse, kv_scales in graphs:
                path = Path(tmp) / f"{variant}-{len(graph)}.onnx"
                _make_variant(raw, variant, path, fuse=fuse, kv_scales=kv_scales)
                kl, top1 = compare(path)
                print(f"| {variant} | {graph} | {kl:.6f} | {top1:.4f} | {path.stat().st_size / 1e6:.1f} |")
                if fuse and kv_scales is None:  # the prompt graph the export ships beside it (onnx/prompt.py)
                    prompt = path.with_name(f"{variant}-prompt.onnx")
                    write_prompt_graph(path, prompt)
                    kl, top1 = compare(prompt)
                    print(f"| {variant} | fused, prompt.onnx (int8 GEMMs) | {kl:.6f} | {top1:.4f} | {prompt.stat().st_size / 1e6:.1f} |")
    peer = PeerConfig(args.llama_python, args.llama_src)
    reason = missing_reason(peer)
    if reason:
        print(reason)
        return
    for variant in PEER_VARIANTS:
        logits, size = peer_logits(Path(source.location), peer, variant, windows, context, export_folder(source, "gguf"))
        kl, top1 = score(logits)
        print(f"| llama.cpp {variant} | GGUF | {kl:.6f} | {top1:.4f} | {size / 1e6:.1f} |")


if __name__ == "__main__":
    main()
