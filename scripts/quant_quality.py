"""How close each quantized export is to PyTorch fp32, with and without the attention fusion:

    python scripts/quant_quality.py [--model demo] [--windows 6]

Text: Python's own docstrings (pydoc of str, list, dict, os.path, open), cut into `--windows` windows of
the model's context. Per variant, built from one optimum export both ways (onnx/export.py's
`_make_variant`, fuse on and off): mean KL(PyTorch || ONNX) per position and top-1 agreement.
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

from playground.models import load_torch_model, resolve_model  # noqa: E402
from playground.onnx.export import _export_fp32, _make_variant  # noqa: E402
from playground.onnx.runtime import OnnxRunner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--windows", type=int, default=6)
    args = parser.parse_args()
    source = resolve_model(args.model)
    model = load_torch_model(source)
    context = model.config.n_positions
    text = "\n".join(pydoc.plain(pydoc.render_doc(o)) for o in (str, list, dict, os.path, open))
    ids = source.tokenizer(text)["input_ids"]
    windows = [ids[i:i + context] for i in range(0, context * args.windows, context) if len(ids) >= i + context]
    with torch.inference_mode():
        reference = [torch.log_softmax(model(torch.tensor([w])).logits[0].float(), -1).numpy() for w in windows]  # (T, V)

    def compare(path: Path) -> tuple[float, float]:
        runner = OnnxRunner(path, ["CPUExecutionProvider"], context=context)
        kl, top1 = [], []
        for window, want in zip(windows, reference):
            got = torch.log_softmax(runner.prefill(window)[0], -1).numpy()  # (T, V)
            kl.append(float((np.exp(want) * (want - got)).sum(-1).mean()))
            top1.append(float((want.argmax(-1) == got.argmax(-1)).mean()))
        return float(np.mean(kl)), float(np.mean(top1))

    print(f"{source.name}: {len(windows)} windows of {context} tokens\n| variant | graph | KL to fp32 | top-1 agreement |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        raw = _export_fp32(model, Path(tmp) / "raw")
        for variant in ("int8", "int4"):
            for fuse in (False, True):
                path = Path(tmp) / f"{variant}-{fuse}.onnx"
                _make_variant(raw, variant, path, fuse=fuse)
                kl, top1 = compare(path)
                graph = "fused, in place" if fuse else "optimum's"
                print(f"| {variant} | {graph} | {kl:.5f} | {top1:.4f} |")


if __name__ == "__main__":
    main()
