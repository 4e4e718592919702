"""The experiments at GPT-2 small's shape: the head scan (144 heads) on a 32-token prompt and the residual patching grid
(13 entries x 16 positions) of a 16-token prompt, timed, with the memory they take.

    python scripts/experiments_bench.py                  # GPT-2 small's shape, random weights (the cost is the same)
    python scripts/experiments_bench.py --model gpt2     # the real weights, when they are in the hub cache
    python scripts/experiments_bench.py --threads 2 --device cuda

Each experiment runs once to warm up, then `--repeats` times; the median is printed (CUDA synchronised around each).
Memory: the process's peak resident size before and after (CPU), or torch's peak allocation (CUDA). Not a test.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def timed(work, repeats: int, device: str) -> float:
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    work()  # warm-up
    seconds = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        work()
        sync()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a hub id or folder (default: GPT-2 small's shape, random weights)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from playground.experiments import Target, head_scan, patch
    from playground.machine import machine_description

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        model = GPT2LMHeadModel.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config())  # 12 layers x 12 heads, d = 768, 50,257 tokens: GPT-2 small
    model = model.eval().to(args.device)
    if args.device.startswith("cuda"):
        model = model.half()
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(1)
    prompt32 = torch.randint(0, vocab, (32,), generator=generator).tolist()
    clean16 = torch.randint(0, vocab, (16,), generator=generator).tolist()
    corrupted16 = clean16[:4] + torch.randint(0, vocab, (1,), generator=generator).tolist() + clean16[5:]
    target = Target(prompt32[5], prompt32[6])
    machine = machine_description()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores{' + ' + machine['gpu'] if machine.get('gpu') else ''}; "
          f"torch threads {torch.get_num_threads()}, device {args.device}")
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    before = peak_rss_mb()
    scan_s = timed(lambda: head_scan(model, prompt32, target), args.repeats, args.device)
    scan_rss = peak_rss_mb()
    grid_s = timed(lambda: patch(model, clean16, corrupted16, Target(clean16[1], clean16[2]), "resid"), args.repeats, args.device)
    n = model.config.n_layer * model.config.n_head
    print(f"head scan, {n} heads, 32 tokens: {scan_s:.2f} s (median of {args.repeats})")
    print(f"residual patching grid, {model.config.n_layer + 1} x 16, 16 tokens: {grid_s:.2f} s (median of {args.repeats})")
    if args.device.startswith("cuda"):
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")
    else:
        print(f"peak resident memory: {before:.0f} MB with the model loaded; {scan_rss:.0f} MB after the head scan, "
              f"{peak_rss_mb():.0f} MB after the patching grid")


if __name__ == "__main__":
    main()
