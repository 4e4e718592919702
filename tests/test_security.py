"""The app in front of strangers: the route guard over Gradio 6.17's known holes, file access, and the login."""

import os
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client

from playground.errors import PlaygroundError
from playground.ui.security import FAILURE_WINDOW_S, MAX_FAILURES, PasswordCheck, exposure_warning, refusal, resolve_login

from .conftest import free_port

REDIRECTS = [
    "/gradio_api/file=https://evil.example/phish",
    "/gradio_api/file=http%3A%2F%2Fevil.example",  # percent-encoded: decoded before routing
    "/gradio_api/file/https://evil.example/phish",  # the legacy alias
    "/gradio_api/file=HTTPS://evil.example",
    "/gradio_api/file=//evil.example/x",
    "//gradio_api//file=https://evil.example",
]
UNAUTHENTICATED_ROUTES = [
    ("POST", "/monitoring/summary"),
    ("GET", "/monitoring/0123456789"),
    ("GET", "/gradio_api/upload_progress?upload_id=abc"),
    ("GET", "/gradio_api/profiling/traces"),
    ("GET", "/gradio_api/proxy=https://evil.example/x"),
]


@pytest.mark.parametrize("path", REDIRECTS)
def test_file_route_does_not_redirect_to_urls(launched_app, path):
    response = httpx.get(launched_app.rstrip("/") + path, follow_redirects=False)
    assert response.status_code == 403 and "location" not in response.headers
    assert "does not redirect" in response.text


@pytest.mark.parametrize("method, path", UNAUTHENTICATED_ROUTES)
def test_unused_unauthenticated_routes_are_refused(launched_app, method, path):
    response = httpx.request(method, launched_app.rstrip("/") + path, follow_redirects=False)
    assert response.status_code == 403 and "disabled in gpt2-playground" in response.text


def test_the_api_page_reads_an_empty_summary(launched_app):
    """Gradio's API page ("Use via API") parses /monitoring/summary as JSON and stays blank otherwise: the guard answers
    it itself, with Gradio's shape and no statistics, after runs too; the monitoring dashboard stays refused."""
    from gradio_client import Client

    base = launched_app.rstrip("/")
    Client(launched_app, verbose=False).predict(prompt="The value of", max_new_tokens=3, seed=1, api_name="/generate")
    for path in ("/monitoring/summary", "//monitoring//summary/", "/MONITORING/summary"):
        response = httpx.get(base + path, follow_redirects=False)
        assert response.status_code == 200 and response.json() == {"functions": {}}, path
    assert httpx.get(base + "/monitoring/summary/x").status_code == 403
    # The page's other probe: 404 means "no MCP server" to it (it then shows the Python client), so it stays Gradio's.
    assert httpx.get(base + "/gradio_api/mcp/schema").status_code == 404


def test_the_guard_is_what_closes_the_holes():
    """Gradio 6.17.3 alone redirects and serves monitoring data; when an upgrade fixes it, this test says so."""
    with gr.Blocks() as plain:
        gr.Markdown("plain")
    plain.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        base = plain.local_url.rstrip("/")
        response = httpx.get(base + REDIRECTS[0], follow_redirects=False)
        assert response.status_code == 302 and response.headers["location"] == "https://evil.example/phish"
        assert httpx.get(base + "/monitoring/summary").status_code == 200
    finally:
        plain.close()


def test_the_app_itself_still_works_behind_the_guard(launched_app):
    base = launched_app.rstrip("/")
    assert httpx.get(base + "/").status_code == 200
    assert httpx.get(base + "/config").status_code == 200
    assert httpx.get(base + "/gradio_api/info").status_code == 200


def test_server_files_are_not_served(launched_app, app_history, tiny_model_dir):
    base = launched_app.rstrip("/")
    for path in ("/etc/passwd", os.path.abspath("pyproject.toml"), str(app_history.path),
                 str(tiny_model_dir / "model.safetensors"), "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd"):
        response = httpx.get(f"{base}/gradio_api/file={path}", follow_redirects=False)
        assert response.status_code in (403, 404) and "root:" not in response.text, path


@pytest.mark.parametrize("path", ["/", "/config", "/gradio_api/info", "/gradio_api/queue/status"])
def test_plain_paths_pass_the_guard(path):
    assert refusal(path) is None
    assert refusal("/gradio_api/file=/tmp/gradio/abc/plot.png") is None
    assert refusal(r"/gradio_api/file=C:\Users\me\AppData\Local\Temp\gradio\x.png") is None  # a drive, not a scheme


# ---- uploads: the Fine-tune tab's training text, and nothing else ------------------------------

def upload(base: str, name: str, content: bytes, **kwargs) -> httpx.Response:
    return httpx.post(base.rstrip("/") + "/gradio_api/upload", files={"files": (name, content, "text/plain")}, timeout=60,
                      **kwargs)


def test_an_uploaded_text_is_accepted_but_never_served_back(launched_app):
    base = launched_app.rstrip("/")
    response = upload(base, "notes.txt", b"Some training text.\n")
    assert response.status_code == 200
    (path,) = response.json()
    assert os.path.isfile(path) and path.endswith("notes.txt")
    for route in (f"/gradio_api/file={path}", f"/gradio_api/file/{path}", f"/gradio_api/file={os.path.dirname(path)}/./notes.txt"):
        refused = httpx.get(base + route, follow_redirects=False)
        assert refused.status_code == 403 and "never served back" in refused.text, route
    from playground.ui.finetune_tab import read_upload

    uploaded = read_upload(path)  # what the tab does with it: read, keep the bytes, delete the file
    assert uploaded.name == "notes.txt" and uploaded.raw == b"Some training text.\n"
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    assert httpx.get(f"{base}/gradio_api/file={path}").status_code == 403


@pytest.mark.parametrize("name", ["photo.png", "tool.exe", "notes.txt.html", "noextension"])
def test_only_text_formats_can_be_uploaded(launched_app, name):
    from gradio.utils import get_upload_folder

    response = upload(launched_app, name, b"MZ\x90\x00 not training text")
    assert response.status_code == 415 and "only training text" in response.text
    assert not list(Path(get_upload_folder()).rglob(name))  # deleted at once


def test_an_upload_over_the_cap_is_refused(launched_app):
    from playground.finetune.data import MAX_DATA_BYTES

    # Over the cap by its Content-Length: the guard answers before a byte is read.
    assert upload(launched_app, "big.txt", b"a" * (MAX_DATA_BYTES + 100 * 1024)).status_code == 413
    # Inside the guard's envelope but over the cap by the file itself: Gradio's max_file_size refuses it.
    response = upload(launched_app, "big.txt", b"a" * (MAX_DATA_BYTES + 1024))
    assert response.status_code == 413 and "maximum allowed size" in response.text


def test_an_upload_without_a_length_is_refused(launched_app):
    def chunks():
        yield b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.txt\"\r\n\r\nabc\r\n--x--\r\n"

    response = httpx.post(launched_app.rstrip("/") + "/gradio_api/upload", content=chunks(),
                          headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert response.status_code == 411


def test_an_upload_needs_the_login_on_the_login_app(app_with_login):
    response = upload(app_with_login, "notes.txt", b"Some training text.\n")
    assert response.status_code == 401


def test_uploads_the_app_never_read_are_deleted_after_a_while(tmp_path):
    from playground.ui.security import UPLOAD_TTL_S, RouteGuard

    now = [0.0]
    guard = RouteGuard(app=None, clock=lambda: now[0])
    forgotten = tmp_path / "abc123" / "left.txt"
    forgotten.parent.mkdir()
    forgotten.write_text("never read")
    guard._uploads[os.path.realpath(forgotten)] = now[0]
    assert guard.is_upload(f"/gradio_api/file={forgotten}")
    guard._forget_old_uploads()
    assert forgotten.exists()
    now[0] += UPLOAD_TTL_S + 1
    guard._forget_old_uploads()
    assert not forgotten.exists() and not forgotten.parent.exists() and not guard._uploads


def test_upload_routes_in_the_guard():
    assert refusal("/gradio_api/upload") is None  # checked by the guard's upload rules, then Gradio's
    assert refusal("/gradio_api/upload_progress") is not None
    assert refusal("//gradio_api//upload_progress") is not None


# ---- the login --------------------------------------------------------------------------------

def test_login_from_the_flag_the_environment_and_a_file(tmp_path):
    assert resolve_login(None, None, {}) is None
    assert resolve_login("alice:s3:cret", None, {}).accounts == (("alice", "s3:cret"),)
    login = resolve_login("alice", None, {"GPT2_PLAYGROUND_PASSWORD": "from-env"})
    assert login.accounts == (("alice", "from-env"),) and "GPT2_PLAYGROUND_PASSWORD" in login.origin
    accounts = tmp_path / "accounts"
    accounts.write_text("# team\nbob:one\n\ncarol: two \n")
    assert resolve_login(None, str(accounts), {}).accounts == (("bob", "one"), ("carol", "two"))


@pytest.mark.parametrize(
    "auth, file_text, message",
    [
        ("alice", None, "has no password: set $GPT2_PLAYGROUND_PASSWORD"),
        ("alice:", None, "expected USER:PASSWORD"),
        (":secret", None, "expected USER:PASSWORD"),
        (None, "bob\n", "line 1: expected USER:PASSWORD"),
        (None, "# nobody\n", "no USER:PASSWORD line"),
        ("bob:x", "bob:y\n", "User bob is given more than once"),
    ],
)
def test_bad_logins_are_refused_clearly(tmp_path, auth, file_text, message):
    path = None
    if file_text is not None:
        path = tmp_path / "accounts"
        path.write_text(file_text)
    with pytest.raises(PlaygroundError, match=None) as info:
        resolve_login(auth, None if path is None else str(path), {})
    assert message in str(info.value)


def test_a_missing_password_file_is_a_clear_error(tmp_path):
    with pytest.raises(PlaygroundError, match="cannot read it"):
        resolve_login(None, str(tmp_path / "nope"), {})


def test_exposure_warnings():
    login = resolve_login("alice:pw", None, {})
    assert "sharing without a login" in exposure_warning(True, "127.0.0.1", None)
    assert "listening on 0.0.0.0 without a login" in exposure_warning(False, "0.0.0.0", None)
    assert exposure_warning(False, "127.0.0.1", None) is None
    assert exposure_warning(True, "0.0.0.0", login) is None


def test_login_protects_the_app_and_its_api(app_with_login):
    base = app_with_login.rstrip("/")
    assert httpx.get(base + "/config").status_code == 401
    assert httpx.post(base + "/gradio_api/call/generate", json={"data": ["x"]}).status_code == 401
    with pytest.raises(ValueError, match="Could not login"):  # Gradio answers 400 to a wrong password
        Client(app_with_login, auth=("alice", "wrong"), verbose=False)
    client = Client(app_with_login, auth=("alice", "correct horse"), verbose=False)
    text, run = client.predict(prompt="The value", max_new_tokens=4, seed=2, api_name="/generate")
    assert len(run["tokens"]) == 4 and text == run["text"]
    # The guard still stands in front of a logged-in app.
    assert httpx.get(base + REDIRECTS[0], follow_redirects=False).status_code == 403


def test_session_banner_shows_the_link_and_the_user_escaped():
    from playground.ui.render import session_html

    assert session_html(None, None) == ""
    html = session_html("https://abc.gradio.live", "<b>eve</b>")
    assert 'href="https://abc.gradio.live"' in html and "&lt;b&gt;eve&lt;/b&gt;" in html and "<b>eve" not in html
    assert "Logged in as" in html and "Log out" in html
    chinese = session_html("https://abc.gradio.live", "eve", "zh-CN")
    assert "公开链接：" in chinese and "已登录：" in chinese and "退出登录" in chinese and "Log" not in chinese


def test_password_guessing_is_braked_per_user():
    now = [1000.0]
    check = PasswordCheck((("alice", "right"), ("bob", "other")), clock=lambda: now[0])
    assert check("alice", "right") and not check("alice", "Right") and not check("mallory", "right")
    for _ in range(MAX_FAILURES - 1):
        assert not check("alice", "guess")
    assert check.locked("alice") and not check("alice", "right")  # locked: the right password waits too
    assert check("bob", "other")  # other users are not affected
    now[0] += FAILURE_WINDOW_S + 1
    assert not check.locked("alice") and check("alice", "right")


def test_admins_must_be_users_of_the_login():
    from playground.ui.security import Login, check_admins

    login = Login((("alice", "a"), ("teacher", "t")), "test")
    assert check_admins(["teacher"], login) == {"teacher"} and check_admins(None, None) == frozenset()
    with pytest.raises(PlaygroundError, match="--admin needs a login"):
        check_admins(["teacher"], None)
    with pytest.raises(PlaygroundError, match="--admin bob: no such user"):
        check_admins(["bob"], login)
