"""Where a decoding step's time goes inside onnxruntime: per-op-type time and node count, the export as built
(attention fused, onnx/fusion.py) against optimum's graph without the fusion, same variant:

    python scripts/profile_ops.py [--model random:gpt2] [--variant int4] [--steps 128] [--threads 2] [--prompt]

Each graph decodes `--steps` tokens after a 32-token prompt with onnxruntime's profiler on; the table
sums the profiler's kernel times over the last 100 steps per op type. With `--prompt` the runs timed
are 32-token prompt passes instead (what time to first token waits for; by the prompt graph where the export
has one). The profiler's own cost
inflates small nodes most, so read the node counts and the shares, and take speed from the benchmark.
"""

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground.models import load_torch_model, resolve_model  # noqa: E402
from playground.onnx.export import _export_fp32, _make_variant, ensure_export  # noqa: E402


def profile(path: Path, steps: int, threads: int, prompt: bool = False) -> tuple[float, float, dict]:
    """(mean step ms under the profiler, mean step ms without it, {op type: (us per step, nodes per step)}).
    The graph is driven by the backend's own runner, so an in-place cache is bound as it is in the app."""
    from playground.onnx import runtime

    def decode(runner) -> float:
        started = time.perf_counter()
        if prompt:
            for _ in range(steps):
                runner.prefill(list(range(1000, 1032)))
            return (time.perf_counter() - started) / steps * 1000
        _, cache = runner.prefill(list(range(1000, 1032)))
        started = time.perf_counter()
        for _ in range(steps):
            _, cache = runner.step(5, cache)
        return (time.perf_counter() - started) / steps * 1000

    plain = runtime.OnnxRunner(path, ["CPUExecutionProvider"], threads=threads)
    decode(plain)  # warm-up
    step_ms = decode(plain)
    original = runtime.session_options

    def profiled(count=None):
        options = original(count)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "profile_ops")
        return options

    runtime.session_options = profiled
    try:
        runner = runtime.OnnxRunner(path, ["CPUExecutionProvider"], threads=threads)
    finally:
        runtime.session_options = original
    decode(runner)
    # Prompts run by the prompt graph where the export has one (onnx/prompt.py): profile the session that ran them.
    sessions = [s for s in (runner.session, runner.prompt_session) if s is not None]
    timed = runner.prompt_session if prompt and runner.prompt_session is not None else runner.session
    traces = {id(s): Path(s.end_profiling()) for s in sessions}
    trace = traces[id(timed)]
    events = json.loads(trace.read_text())
    for other in traces.values():
        other.unlink()
    runs = [e for e in events if e.get("name") == "model_run"][-(min(100, steps - 1) if prompt else 100):]  # not the first
    since = runs[0]["ts"]
    time_us, count = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= since:
            op = event["args"].get("op_name")
            time_us[op] += event["dur"]
            count[op] += 1
    per_step = {op: (time_us[op] / len(runs), count[op] / len(runs)) for op in time_us}
    return sum(r["dur"] for r in runs) / len(runs) / 1000, step_ms, per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:gpt2")
    parser.add_argument("--variant", default="int4", choices=["fp32", "int8", "int4"])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--lines", type=int, default=12)
    parser.add_argument("--prompt", action="store_true", help="time 32-token prompt passes instead of decoding steps")
    args = parser.parse_args()
    source = resolve_model(args.model)
    fused, _ = ensure_export(source, args.variant)
    with tempfile.TemporaryDirectory() as tmp:
        raw = _export_fp32(load_torch_model(source), Path(tmp) / "raw")
        unfused = Path(tmp) / "unfused.onnx"
        _make_variant(raw, args.variant, unfused, fuse=False)
        results = {"optimum's graph": profile(unfused, args.steps, args.threads, args.prompt),
                   "fused (the export)": profile(fused, args.steps, args.threads, args.prompt)}
    for name, (profiled_ms, step_ms, per_step) in results.items():
        nodes = sum(c for _, c in per_step.values())
        unit = "prompt pass" if args.prompt else "step"
        print(f"\n{name}: {nodes:.0f} nodes per {unit}, {step_ms:.2f} ms per {unit} ({profiled_ms:.2f} ms under the profiler)")
        print(f"| op | us/{unit} | nodes | share |\n|---|---|---|---|")
        for op, (us, c) in sorted(per_step.items(), key=lambda item: -item[1][0])[: args.lines]:
            print(f"| {op} | {us:.0f} | {c:.0f} | {100 * us / (profiled_ms * 1000):.1f}% |")


if __name__ == "__main__":
    main()
