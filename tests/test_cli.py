"""`python app.py` as a user runs it: clear errors for bad flags, and `--share` offline keeps serving locally."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def run_app(*args, timeout=60):
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_missing_model_folder_is_a_one_line_error():
    result = run_app("--model", "./no/such/folder", "--no-browser")
    assert result.returncode == 2
    assert result.stderr.startswith("error: Model folder") and "Traceback" not in result.stderr


def test_help_lists_the_flags():
    out = run_app("--help").stdout
    for flag in ("--model", "--backend", "--device", "--host", "--port", "--no-browser", "--share"):
        assert flag in out


def test_share_offline_says_why_and_keeps_serving_locally(tiny_model_dir):
    port = free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--model", str(tiny_model_dir), "--share", "--no-browser", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "No public link was made" in line:
                break
        output = "".join(lines)
        assert "No public link was made" in output, output
        assert "Model in use: tiny-gpt2 · torch fp32 · cpu" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)
