"""`python app.py` as a user runs it: clear errors for bad flags, and `--share` offline keeps serving locally."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def run_app(*args, timeout=60):
    env = {k: v for k, v in os.environ.items() if k != "GPT2_PLAYGROUND_PASSWORD"} | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_missing_model_folder_is_a_one_line_error():
    result = run_app("--model", "./no/such/folder", "--no-browser")
    assert result.returncode == 2
    assert result.stderr.startswith("error: Model folder") and "Traceback" not in result.stderr


@pytest.mark.slow
def test_auth_without_a_password_is_a_one_line_error():
    result = run_app("--auth", "alice", "--no-browser")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --auth alice has no password") and "Traceback" not in result.stderr


def test_help_lists_the_flags():
    out = run_app("--help").stdout
    for flag in ("--model", "--backend", "--device", "--host", "--port", "--no-browser", "--share", "--auth", "--auth-file"):
        assert flag in out


def start_app(*args, until: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start `python app.py ARGS` and read its output until a line containing `until` (or it ends)."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"} | (env or {})
    proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if until in line:
            break
    return proc, "".join(lines)


@pytest.mark.slow
def test_share_offline_says_why_and_keeps_serving_locally(tiny_model_dir):
    port = free_port()
    proc, output = start_app("--model", str(tiny_model_dir), "--share", "--no-browser", "--port", str(port),
                             until="No public link was made")
    try:
        assert "No public link was made" in output, output
        assert "Warning: sharing without a login" in output
        assert "Model in use: tiny-gpt2 · torch fp32 · cpu" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_auth_file_puts_the_app_behind_a_login(tiny_model_dir, tmp_path):
    accounts = tmp_path / "accounts"
    accounts.write_text("alice:correct horse\n")
    accounts.chmod(0o644)
    port = free_port()
    proc, output = start_app("--model", str(tiny_model_dir), "--auth-file", str(accounts), "--no-browser",
                             "--port", str(port), until="Running on")
    try:
        assert "Login required: alice" in output and "correct horse" not in output
        assert "can be read by other users of this machine; chmod 600 it" in output
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/config").status_code == 401
        login = httpx.post(f"http://127.0.0.1:{port}/login", data={"username": "alice", "password": "correct horse"})
        assert login.status_code == 200 and login.json() == {"success": True}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_ctrl_c_while_fine_tuning_stops_the_job_and_keeps_its_checkpoint(tiny_model_dir, tmp_path, browser):
    """Ctrl+C on `python app.py` while a fine-tuning job trains: the job stops at the end of its step and keeps its
    checkpoint, to be resumed after a restart, and the app exits cleanly (before, the process was cut off mid-step,
    and torch's threads aborted it: "terminate called without an active exception")."""
    import signal

    from playground.finetune.checkpoints import resumable_jobs
    from playground.ui.i18n import t

    from .browser import open_app
    from .test_ui_browser import fill, training_text_file

    models, port = tmp_path / "models", free_port()
    proc, output = start_app("--model", str(tiny_model_dir), "--no-browser", "--port", str(port), "--db", str(tmp_path / "h.db"),
                             until="Running on", env={"GPT2_PLAYGROUND_MODELS": str(models)})
    try:
        context, page = open_app(browser, f"http://127.0.0.1:{port}/")
        page.get_by_role("tab", name=t("app.tab.finetune", "en")).click()
        page.locator("#ft-upload input[type=file]").set_input_files(str(training_text_file(tmp_path)))
        page.locator("#ft-upload-info").get_by_text("Read licence.txt").wait_for()
        fill(page.locator("#ft-block input"), "32")
        fill(page.locator("#ft-name input, #ft-name textarea").first, "interrupted")
        fill(page.locator("#ft-max-steps input"), "100000")
        page.locator("#ft-start").click()
        page.wait_for_function("() => /step (\\d+) \\/ 100000/.exec(document.querySelector('#ft-progress').innerText)?.[1] >= 3")
        context.close()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output += rest
    assert proc.returncode == 0, output
    assert "Stopping the fine-tuning job at the end of its step; its checkpoint is kept for Resume." in output
    assert "terminate called" not in output and "Traceback" not in output, output
    [job] = resumable_jobs(models)
    assert job["name"] == "interrupted" and job["step"] >= 3, job
