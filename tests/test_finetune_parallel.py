"""Fine-tuning in several processes (data parallel through accelerate, started by torchrun): the same training as one
process with the same global batch, and one model written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from playground.finetune.run import FineTuneSettings, run_finetune
from playground.models import resolve_model

from .conftest import free_port

GPL3 = Path("/usr/share/common-licenses/GPL-3")
STEPS = 8
# Relative agreement of every step's loss: the two runs add the same numbers in another order (a mean of two half-batch
# means, and DDP's all-reduce, against one mean), so they differ in the last bits, and Adam carries that along.
TOLERANCE = 1e-4


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_global_batch(tiny_model_dir, tmp_path):
    # Without dropout: each process would otherwise draw its own masks, and the runs would differ by their noise.
    model = tmp_path / "no-dropout"
    model.mkdir()
    for path in Path(tiny_model_dir).iterdir():
        if path.is_file():
            (model / path.name).write_bytes(path.read_bytes())
    config = json.loads((model / "config.json").read_text())
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    (model / "config.json").write_text(json.dumps(config))
    data = tmp_path / "legal.txt"
    data.write_text(GPL3.read_text(encoding="utf-8")[:8_000], encoding="utf-8")
    common = dict(block_size=32, warmup_steps=2, eval_every=4, max_steps=STEPS, learning_rate=3e-3)

    one = run_finetune(resolve_model(str(model)), data, FineTuneSettings(batch_size=4, **common), "one", tmp_path / "m1", threads=1)

    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "playground.finetune",
         "--model", str(model), "--data", str(data), "--name", "two", "--models-dir", str(tmp_path / "m2"), "--batch-size", "2",
         "--block-size", "32", "--warmup-steps", "2", "--eval-every", "4", "--max-steps", str(STEPS), "--lr", "3e-3", "--json"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent,
        env=os.environ | {"PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Fine-tuning no-dropout") == 1  # the first process speaks for both
    two = json.loads(result.stdout[result.stdout.index("\n{") + 1:])
    assert two["processes"] == 2 and two["steps"] == STEPS and one["processes"] == 1
    for (step_a, a), (step_b, b) in zip(one["loss_curve"]["train"] + one["loss_curve"]["val"],
                                        two["loss_curve"]["train"] + two["loss_curve"]["val"], strict=True):
        assert step_a == step_b and abs(a - b) <= TOLERANCE * abs(a), (step_a, a, b)
    assert sorted(p.name for p in (tmp_path / "m2").iterdir()) == ["two"]  # one model, written once; no job folder left
    assert (tmp_path / "m2" / "two" / "model.safetensors").is_file()
