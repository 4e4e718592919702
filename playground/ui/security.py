"""What stands in front of Gradio when the app is shared: a route guard and the login settings.

Gradio 6.17.3 is the newest release that resolves with optimum-onnx (see pyproject.toml), and it
predates fixes published in later 6.x releases. The guard closes each of those holes in front of
Gradio, for every request, shared link or not:

- `/gradio_api/file=<http(s) URL>` (and the `/gradio_api/file/` alias) answered with a 302 to any
  URL, an open redirect on the app's host (gradio issues #13593, #13608; fixed upstream by #13687);
- `/monitoring/summary` and `/monitoring/{key}` carry no login check (#13687);
- `/gradio_api/upload_progress` carries no login check (#13687);
- `/gradio_api/profiling/*` (only with GRADIO_PROFILING=1) carries no login check (#13687).

The playground uses none of these routes, nor the `proxy=` route for loaded Spaces, the dev-reload
stream or the vibe editor; those are refused too, so a stranger cannot reach code the app never meant
to expose. One exception: Gradio's own API page ("Use via API" in the footer) reads `GET
/monitoring/summary` (per-endpoint call statistics) and stays blank when that is not JSON, so the guard
answers it itself with an empty summary (`{"functions": {}}`, what Gradio serves before any call): the
page works and tells a stranger nothing. (The page's other probe, `GET /gradio_api/mcp/schema`, answers
404 because the MCP server is off; the page reads that as "no MCP" and shows the Python client.)

Uploads (`POST /gradio_api/upload`) are open for one use only, the Fine-tune tab's training data, and
narrowed to it here, in front of Gradio's own checks (its login, and `max_file_size` given to `launch`):
a request must state its Content-Length and stay under the 20 MB cap plus the multipart envelope; a
file whose name does not end in .txt, .jsonl or .csv is deleted at once and the request refused (415);
an uploaded file is never served back by the file route (Gradio's would serve anything in its upload
folder), and one the app has not read and deleted within UPLOAD_TTL_S is deleted at the next upload.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import stat
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import JSONResponse, PlainTextResponse

from ..errors import PlaygroundError
from ..finetune.data import FORMATS, MAX_DATA_BYTES

# Prefixes of routes that the app never uses (after collapsing repeated slashes).
DENIED_PREFIXES = (
    "/monitoring",
    "/gradio_api/monitoring",
    "/gradio_api/upload_progress",  # no login check; the upload works without its progress stream
    "/gradio_api/profiling",
    "/gradio_api/proxy=",
    "/gradio_api/dev/reload",
    "/gradio_api/vibe-",
    "/gradio_api/undo-vibe-",
)
# What the API page reads, answered with no statistics (see the module's docstring).
API_PAGE_SUMMARY = re.compile(r"^/+monitoring/+summary/*$", re.IGNORECASE)
EMPTY_SUMMARY = {"functions": {}}
UPLOAD_ROUTE = re.compile(r"^/+gradio_api/+upload/*$", re.IGNORECASE)
MULTIPART_ENVELOPE_BYTES = 64 * 1024  # boundaries and part headers around the file, well above what a browser sends
UPLOAD_TTL_S = 15 * 60.0  # an upload the app has not read and deleted by then is deleted
FILE_ROUTE = re.compile(r"^/+gradio_api/+file(?:=|/)", re.IGNORECASE)
# A URL scheme (two characters or more, so a Windows drive letter such as C: is still a path) or a
# scheme-relative //host or \\host.
URL_LIKE = re.compile(r"^\s*(?:[a-z][a-z0-9+.\-]+:|[/\\]{2})", re.IGNORECASE)


def refusal(path: str) -> str | None:
    """Why the guard refuses a request for `path` (already percent-decoded, as ASGI gives it), or None."""
    collapsed = re.sub(r"/{2,}", "/", path).lower()
    if collapsed.startswith(DENIED_PREFIXES):
        return "This route is disabled in gpt2-playground (see 'Sharing and security' in its README)."
    file_route = FILE_ROUTE.match(path)
    if file_route and URL_LIKE.match(path[file_route.end():]):
        return "The file route serves the app's own files only; it does not redirect to URLs."
    return None


def upload_refusal(headers: dict[bytes, bytes]) -> tuple[int, str] | None:
    """(status, why) when an upload request's headers already rule it out, else None."""
    length = headers.get(b"content-length", b"").strip()
    if not length.isdigit():
        return 411, "Uploads must state their Content-Length."
    if int(length) > MAX_DATA_BYTES + MULTIPART_ENVELOPE_BYTES:
        return 413, f"Uploads are limited to {MAX_DATA_BYTES // 2**20} MB of training text (.txt, .jsonl, .csv)."
    return None


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


class RouteGuard:
    """ASGI middleware that answers 403 to the routes `refusal` names, before Gradio sees them, and narrows
    uploads to training text (see the module's docstring)."""

    def __init__(self, app, clock=time.monotonic):
        self.app = app
        self._clock = clock
        self._uploads: dict[str, float] = {}  # real path of each file the upload route saved -> when
        self._uploads_lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            path, root = scope.get("path", ""), scope.get("root_path", "")
            if root and path.startswith(root):  # served under a prefix (behind a proxy): judge the app's own path
                path = path[len(root):]
            if scope["type"] == "http" and scope.get("method") in ("GET", "HEAD") and API_PAGE_SUMMARY.match(path):
                await JSONResponse(EMPTY_SUMMARY)(scope, receive, send)
                return
            reason = refusal(path)
            if reason is None and self.is_upload(path):
                reason = "An uploaded file is never served back."
            if reason is not None:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await PlainTextResponse(reason, status_code=403)(scope, receive, send)
                return
            if scope["type"] == "http" and UPLOAD_ROUTE.match(path):
                await self._upload(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def is_upload(self, path: str) -> bool:
        """Whether `path` asks the file route for a file the upload route saved."""
        match = FILE_ROUTE.match(path)
        if not match:
            return False
        with self._uploads_lock:
            return bool(self._uploads) and _real(path[match.end():]) in self._uploads

    async def _upload(self, scope, receive, send) -> None:
        """Let Gradio save the files (login and size checked by it too), then keep only text formats, remembered
        so the file route refuses them."""
        if scope.get("method") == "POST":
            refused = upload_refusal(dict(scope.get("headers", [])))
            if refused is not None:
                await PlainTextResponse(refused[1], status_code=refused[0])(scope, receive, send)
                return
        self._forget_old_uploads()
        start, body = None, []

        async def hold(message):  # Gradio's answer is a short JSON list of paths: hold it until it is checked
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            response = b"".join(body)
            if start["status"] == 200:
                saved = [p for p in json.loads(response or b"[]") if isinstance(p, str)]
                wrong = [p for p in saved if Path(p).suffix.lower() not in FORMATS]
                if wrong:
                    for saved_path in saved:
                        delete_upload(saved_path)
                    names = ", ".join(Path(p).name for p in wrong)[:200]
                    await PlainTextResponse(f"{names}: only training text can be uploaded ({', '.join(FORMATS)}).",
                                            status_code=415)(scope, receive, send)
                    return
                with self._uploads_lock:
                    now = self._clock()
                    self._uploads.update((_real(p), now) for p in saved)
            await send(start)
            await send({"type": "http.response.body", "body": response})

        await self.app(scope, receive, hold)

    def _forget_old_uploads(self) -> None:
        """Delete the uploads older than UPLOAD_TTL_S (the app deletes the ones it reads at once)."""
        now = self._clock()
        with self._uploads_lock:
            old = [p for p, when in self._uploads.items() if now - when > UPLOAD_TTL_S]
        for path in old:
            delete_upload(path)
        with self._uploads_lock:  # gone from disk, so the file route has nothing to serve; a new upload re-adds it
            for path in old:
                if now - self._uploads.get(path, now) > UPLOAD_TTL_S:
                    del self._uploads[path]


def delete_upload(path: str | Path) -> None:
    """Delete an uploaded file and the folder Gradio made for it (named after its hash) when that is left empty."""
    path = Path(path)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty (another file of the same content), or already gone
        pass


@dataclass(frozen=True)
class Login:
    """Accounts for Gradio's login page, and where they came from (shown at start-up, never the passwords)."""

    accounts: tuple[tuple[str, str], ...]
    origin: str

    def users(self) -> list[str]:
        return [user for user, _ in self.accounts]


def check_admins(admins: list[str] | None, login: Login | None) -> frozenset[str]:
    """The logins given `--admin` (the teacher: sees, exports and deletes everyone's runs); each must be an account
    of the login, since without a login the one local user sees every run already."""
    admins = [name.strip() for name in admins or []]
    if not admins:
        return frozenset()
    if login is None:
        raise PlaygroundError("--admin needs a login (--auth or --auth-file): without one, the local user sees every run already.")
    unknown = [name for name in admins if name not in login.users()]
    if unknown:
        raise PlaygroundError(f"--admin {unknown[0]}: no such user in the login ({', '.join(login.users())}).")
    return frozenset(admins)


PASSWORD_ENV = "GPT2_PLAYGROUND_PASSWORD"
MAX_FAILURES = 10  # wrong passwords per user ...
FAILURE_WINDOW_S = 600.0  # ... within this window lock that user out until the oldest failure ages out


class PasswordCheck:
    """Gradio's `auth` callable: a constant-time comparison, and a brake on guessing.

    A shared link lets anyone post to /login as often as they like, and behind the share tunnel every
    request comes from 127.0.0.1, so the brake is per user name, not per address: after MAX_FAILURES
    wrong passwords within FAILURE_WINDOW_S that user is refused, the right password included,
    until the oldest failure ages out. Unknown user names are refused without keeping any state.
    """

    def __init__(self, accounts: tuple[tuple[str, str], ...], clock=time.monotonic):
        self._passwords = dict(accounts)
        self._failures: dict[str, deque[float]] = {user: deque() for user in self._passwords}
        self._lock = threading.Lock()
        self._clock = clock

    def locked(self, username: str) -> bool:
        with self._lock:
            return self._prune(username, self._clock()) >= MAX_FAILURES

    def _prune(self, username: str, now: float) -> int:
        recent = self._failures[username]
        while recent and now - recent[0] > FAILURE_WINDOW_S:
            recent.popleft()
        return len(recent)

    def __call__(self, username: str, password: str) -> bool:
        expected = self._passwords.get(username)
        if expected is None:
            return False
        now = self._clock()
        with self._lock:
            if self._prune(username, now) >= MAX_FAILURES:
                return False
        if hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8")):
            return True
        with self._lock:
            self._failures[username].append(now)
            if len(self._failures[username]) == MAX_FAILURES:
                print(f"Login: {MAX_FAILURES} wrong passwords for {username!r} within {FAILURE_WINDOW_S / 60:.0f} minutes; "
                      "refusing that user for a while.", file=sys.stderr, flush=True)
        return False


def parse_account(text: str, where: str) -> tuple[str, str]:
    """USER:PASSWORD, split at the first colon (a password may hold colons); spaces around each part are dropped."""
    user, sep, password = text.partition(":")
    user, password = user.strip(), password.strip()
    if not sep or not user or not password:
        raise PlaygroundError(f"{where}: expected USER:PASSWORD, with neither part empty.")
    return user, password


def resolve_login(auth: str | None, auth_file: str | None, environ: dict | None = None) -> Login | None:
    """The login from `--auth` and `--auth-file`, or None when neither is given.

    `--auth USER:PASSWORD` shows the password in the process list, so `--auth USER` takes it from
    $GPT2_PLAYGROUND_PASSWORD instead, and `--auth-file` reads USER:PASSWORD lines (# comments allowed).
    """
    environ = os.environ if environ is None else environ
    accounts: list[tuple[str, str]] = []
    origins = []
    if auth is not None:
        if ":" in auth:
            accounts.append(parse_account(auth, "--auth"))
            origins.append("--auth")
        else:
            password = environ.get(PASSWORD_ENV, "")
            if not auth.strip():
                raise PlaygroundError("--auth: expected USER or USER:PASSWORD.")
            if not password:
                raise PlaygroundError(f"--auth {auth} has no password: set ${PASSWORD_ENV}, or use --auth-file.")
            accounts.append((auth.strip(), password))
            origins.append(f"--auth with ${PASSWORD_ENV}")
    if auth_file is not None:
        path = Path(auth_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise PlaygroundError(f"--auth-file {path}: cannot read it ({exc}).") from None
        found = [parse_account(line, f"--auth-file {path}, line {number}")
                 for number, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise PlaygroundError(f"--auth-file {path}: no USER:PASSWORD line in it.")
        accounts.extend(found)
        origins.append(f"--auth-file {path}")
    if not accounts:
        return None
    users = [user for user, _ in accounts]
    duplicates = sorted({user for user in users if users.count(user) > 1})
    if duplicates:
        raise PlaygroundError(f"User {', '.join(duplicates)} is given more than once; keep one password per user.")
    return Login(tuple(accounts), " and ".join(origins))


def auth_file_warning(auth_file: str | None) -> str | None:
    """A warning when the password file can be read by other users of this machine (POSIX only)."""
    if auth_file is None or os.name != "posix":
        return None
    mode = Path(auth_file).expanduser().stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"Warning: {auth_file} can be read by other users of this machine; chmod 600 it."
    return None


def exposure_warning(share: bool, host: str, login: Login | None) -> str | None:
    """What to tell the user when the app is reachable by others and nobody has to log in."""
    if login is not None:
        return None
    if share:
        return ("Warning: sharing without a login. Anyone with the public link can use this app, its GPU or CPU, "
                "and read every prompt in its history. Add --auth USER (password from "
                f"${PASSWORD_ENV}) or --auth-file FILE.")
    if host not in ("127.0.0.1", "localhost", "::1"):
        return (f"Warning: listening on {host} without a login: anyone who can reach this machine can use the app "
                "and read its history. Add --auth USER or --auth-file FILE.")
    return None
