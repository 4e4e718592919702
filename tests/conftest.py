"""Shared fixtures: no network, a tiny real GPT-2 built by the demo recipe, a launched app."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# One torch thread in the tests' process and in the processes they start (a test that is about threads sets its own).
# The suite runs on 2 cores beside other work; torch's default of a thread per core makes every operation wait for the
# thread whose core is busy elsewhere (machine.training_threads): test_inside.py took 75 and 99 s with two threads, 53
# and 60 s with one, in alternation on the shared machine (2026-12-05); the demo model's validation, 150 texts, 21 s
# against 2.3 s. The checks are the same: the tests compare tokens and numbers, never speeds.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Never touch the user's real history (subprocesses inherit this too).
import tempfile  # noqa: E402

os.environ["GPT2_PLAYGROUND_DB"] = str(Path(tempfile.mkdtemp(prefix="gpt2-playground-tests-")) / "history.db")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# Block every connection that does not stay on this machine: tests must never reach a hub.
_real_connect = socket.socket.connect


def _loopback_only_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local:
            raise OSError(f"network blocked in tests: connection to {address!r}")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only_connect

# One torch thread, always: the same-seed tests rebuild these and compare the weights, which are the same for the same
# thread count only (a recipe's default follows the cores that other processes leave free).
TINY_RECIPE = dict(n_layer=2, n_embd=64, n_head=2, context=64, vocab_size=512, steps=60, batch_size=8, max_chars=60_000, threads=1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts on one torch thread (OMP_NUM_THREADS above), even after one that set its own count and left it
    (the benchmark sets the count it measures with)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 with its own BPE tokenizer, trained for a few seconds, saved in Hugging Face format."""
    from playground.training.demo import DemoRecipe, build_demo_model

    out = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    build_demo_model(out, DemoRecipe(**TINY_RECIPE), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_source(tiny_model_dir):
    from playground.models import resolve_model

    return resolve_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_exports_root(tmp_path_factory) -> Path:
    """One ONNX exports folder for the tiny model, shared by the modules that only load its exports (fp32, int8, int4:
    each is made by whichever test first asks for it and reused, as a user's exports/ is, after its manifest is checked).
    An export costs more than most tests (about 5 s each alone, 20 s on the loaded 2 cores); the tests of exporting itself
    (test_onnx.py: damaged, stale, reused exports) and of an export under way (test_generation.py) keep folders of their own."""
    return tmp_path_factory.mktemp("tiny-exports")


@pytest.fixture(scope="session")
def tiny_backend(tiny_source):
    from playground.backends.torch import TorchBackend

    return TorchBackend(tiny_source, device="cpu")


def wait_until(condition, timeout_s: float = 180.0, every_s: float = 0.1):
    """Wait for the server to do something it does in its own time (save a run after a client left), checking
    `condition` until it holds; fails after `timeout_s`, a limit that costs nothing when things work."""
    import time

    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout_s:.0f} s: {condition}")
        time.sleep(every_s)
    return result


def last_run_id(store) -> int:
    """The newest run's id in `store` (0 when empty)."""
    newest = store.recent(1)
    return newest[0]["id"] if newest else 0


def saved_since(store, before_id: int, prompts) -> list[str]:
    """The prompts, among `prompts`, of the runs saved after run `before_id`: what a test's own requests saved, however
    late another test's run (a client that left) is saved beside them."""
    return sorted(r["prompt"] for r in store.recent(1000) if r["id"] > before_id and r["prompt"] in set(prompts))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_history(tmp_path_factory):
    """The launched app's history file."""
    from playground.history import HistoryStore

    return HistoryStore(tmp_path_factory.mktemp("app-history") / "history.db")


@pytest.fixture(scope="session")
def models_root(tiny_model_dir, tiny_zh_bin_dir, tmp_path_factory) -> Path:
    """An allow-listed models folder holding a copy of the tiny model as `tiny-copy` and the tiny Chinese one
    (uer layout: BertTokenizer, pytorch_model.bin) as `tiny-zh`."""
    import shutil

    root = tmp_path_factory.mktemp("models-root")
    shutil.copytree(tiny_model_dir, root / "tiny-copy")
    shutil.copytree(tiny_zh_bin_dir, root / "tiny-zh")
    return root


# The Playgrounds of the apps served below: a test that fails while a fine-tuning job of theirs runs must not leave it
# running for the tests after it (they would find the process's one training slot taken, and the cores busy).
SERVED: list = []


def serve(playground) -> None:
    """Note an app about to be served from this process: its fine-tuning job is stopped after a test that fails, and the
    notices it sends are kept (tests/browser.py SENT_NOTICES)."""
    from .browser import record_sent_notices

    record_sent_notices()
    SERVED.append(playground)


@pytest.fixture(autouse=True)
def no_fine_tune_left_running():
    yield
    for playground in SERVED:
        playground.finetune_jobs.shutdown()  # nothing to do (and at once) when none runs


@pytest.fixture(scope="session")
def launched_app(tiny_source, tmp_path_factory, app_history, models_root):
    """The real Gradio app on the tiny model, served on a free loopback port (exports and history in temporary folders)."""
    from playground.service import Playground
    from playground.ui.app import build_demo, launch_kwargs

    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path_factory.mktemp("app-exports"), history=app_history,
                            models_root=models_root)
    serve(playground)
    demo = build_demo(playground)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs())
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="session")
def app_with_login(tiny_source, tmp_path_factory):
    """The app behind a login: user alice, password "correct horse"."""
    from playground.service import Playground
    from playground.ui.app import build_demo, launch_kwargs
    from playground.ui.security import resolve_login

    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path_factory.mktemp("login-exports"))
    serve(playground)
    demo = build_demo(playground)
    login = resolve_login("alice:correct horse", None, {})
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(login))
    yield demo.local_url
    demo.close()


CLASS_PASSWORDS = {"alice": "alice pw", "bob": "bob pw", "carol": "carol pw", "teacher": "teacher pw"}
CLASS_LIMITS = dict(runs=4, tokens_per_minute=64)  # carol floods (test_limits); the others ask for a few tokens each


@pytest.fixture(scope="session")
def class_app(tiny_source, tmp_path_factory, models_root):
    """A class on one link: the app behind a login for alice, bob, carol and teacher (--admin teacher), with its own
    history and CLASS_LIMITS per user. Yields (url, history store)."""
    from playground.history import HistoryStore
    from playground.limits import UserLimits
    from playground.service import Playground
    from playground.ui.app import build_demo, launch_kwargs
    from playground.ui.security import Login, check_admins

    login = Login(tuple(CLASS_PASSWORDS.items()), "tests")
    history = HistoryStore(tmp_path_factory.mktemp("class-history") / "history.db")
    playground = Playground(tiny_source, device="cpu", exports_root=tmp_path_factory.mktemp("class-exports"), history=history,
                            models_root=models_root, admins=check_admins(["teacher"], login), limits=UserLimits(**CLASS_LIMITS))
    serve(playground)
    demo = build_demo(playground)
    demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs(login))
    yield demo.local_url, history
    demo.close()


# ---- Chinese GPT-2: a tiny model in the layout of the uer/gpt2-chinese-cluecorpussmall checkpoints -------

TINY_ZH_RECIPE = dict(n_layer=2, n_embd=64, n_head=2, context=64, steps=150, batch_size=8, learning_rate=6e-3, max_chars=40_000, threads=1)


@pytest.fixture(scope="session")
def tiny_zh_demo_dir(tmp_path_factory) -> Path:
    """A 2-layer Chinese GPT-2 built by the Chinese demo recipe (fortunes-zh, character BertTokenizer), a few seconds of training."""
    from playground.training.demo import ZhDemoRecipe, build_demo_model

    out = tmp_path_factory.mktemp("zh-models") / "tiny-zh-demo"
    build_demo_model(out, ZhDemoRecipe(**TINY_ZH_RECIPE), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_zh_bin_dir(tiny_zh_demo_dir) -> Path:
    """The same weights and vocabulary laid out exactly like uer's checkpoints: config.json (GPT2LMHeadModel,
    tokenizer_class BertTokenizer, no bos/eos ids), vocab.txt, tokenizer_config.json and special_tokens_map.json
    as BertTokenizer.save_pretrained writes them, and the weights only as a pickled pytorch_model.bin."""
    import shutil

    from transformers import GPT2Config, GPT2LMHeadModel

    out = tiny_zh_demo_dir.parent / "tiny-zh-gpt2"
    model = GPT2LMHeadModel.from_pretrained(tiny_zh_demo_dir)
    defaults = GPT2Config()
    model.config.bos_token_id, model.config.eos_token_id = defaults.bos_token_id, defaults.eos_token_id  # left out of config.json
    model.config.pad_token_id = None
    model.save_pretrained(out, safe_serialization=False)
    (out / "generation_config.json").unlink()  # uer's repositories predate generation_config.json
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(tiny_zh_demo_dir / name, out / name)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "pytorch_model.bin", "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]
    return out


# ---- Browser tests: one Chromium per session, a new context (cookies, session, language) per test --------

def pytest_collection_modifyitems(config, items):
    """Tests that drive a browser are marked `browser`: `-m "not browser"` leaves them out."""
    for item in items:
        if {"browser", "page", "zh_page"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's), shared by the browser tests; each test opens its own context in it."""
    from .browser import CHROMIUM, CHROMIUM_ARGS, HAVE_CHROMIUM

    if not HAVE_CHROMIUM and not os.environ.get("CI"):
        pytest.skip("Chromium is not installed (apt-get install chromium); CI always runs these tests")
    from playwright.sync_api import expect, sync_playwright

    from .browser import LONG_MS

    expect.set_options(timeout=LONG_MS)  # waits are for conditions: see tests/browser.py
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, launched_app):
    """The app in a fresh English page of its own."""
    from .browser import open_app

    context, page = open_app(browser, launched_app, "en-US")
    yield page
    context.close()


@pytest.fixture
def zh_page(browser, launched_app):
    """The app in a fresh page of a Simplified-Chinese browser."""
    from .browser import open_app

    context, page = open_app(browser, launched_app, "zh-CN")
    yield page
    context.close()
