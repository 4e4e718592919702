"""The app in front of strangers: the route guard over Gradio 6.17's known holes, file access, and the login."""

import os

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
    ("GET", "/monitoring/summary"),
    ("GET", "/monitoring/0123456789"),
    ("GET", "/gradio_api/upload_progress?upload_id=abc"),
    ("POST", "/gradio_api/upload"),
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
