"""The SQLite history of every run (sqlite-utils): saved when a run ends, searchable, exportable, migrated in place.

`python -m playground.history list|search|show|export|delete` works on the same file from a terminal.
Search finds substrings in any script (Chinese has no spaces between words); CSV opens right in a spreadsheet
on a Chinese system (UTF-8 with a BOM).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sqlite3
import sys
import unicodedata
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from .errors import PlaygroundError
from .token_pack import pack_tokens, unpack_tokens

APP_DIR_NAME = "gpt2-playground"
DB_ENV = "GPT2_PLAYGROUND_DB"
BUSY_TIMEOUT_S = 30.0
JSON_COLUMNS = ("settings", "tokens", "metrics", "intervention", "beam")
LIST_COLUMNS = ("id", "created_at", "model", "backend", "variant", "provider", "prompt", "output", "status", "metrics",
                "group_id", "sample_index", "owner", "intervention")
STATUSES = ("complete", "stopped", "error")
JOB_STATUSES = ("queued", "running", "complete", "cancelled", "error")
JOB_JSON_COLUMNS = ("settings", "progress", "report", "error")
GROUP_PREFIX = "group:"  # a search for one group's runs
TRIGRAM_MIN_CHARS = 3  # FTS5's trigram tokenizer cannot match a shorter term
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # valid in a Python str, not encodable as UTF-8
# Whose a row is: the login name of the user who made it, or LOCAL_OWNER for a run made without a login (the app's
# single local user; every row saved before owners existed). Readers pass `owner=` to see one user's rows only;
# owner=None (the local user, an admin, the command line) sees every row.
LOCAL_OWNER = ""


class HistoryUnavailable(PlaygroundError):
    """The history file cannot be used; the app keeps generating without it."""


def default_db_path() -> Path:
    """`$GPT2_PLAYGROUND_DB`, else the platform's per-user data folder (never inside the repo or a served folder)."""
    if os.environ.get(DB_ENV):
        return Path(os.environ[DB_ENV]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / APP_DIR_NAME / "history.db"


# --- schema: numbered migrations, never edited once released ---------------------------------------

migrations = Migrations("gpt2-playground")


@migrations(name="m001_runs")
def m001_runs(db: Database) -> None:
    """The first schema: one row per run, JSON columns, full-text search over prompt and output."""
    db.table("runs").create(
        {
            "id": int,
            "created_at": str,  # UTC ISO 8601
            "model": str,
            "backend": str,
            "variant": str,
            "provider": str,
            "prompt": str,
            "settings": str,  # JSON: every sampling setting, seed included
            "output": str,
            "tokens": str,  # JSON: per-token records, prompt and output
            "metrics": str,  # JSON: ttft_ms, decode_tokens_per_s, token counts, prompt_perplexity, ...
            "status": str,  # complete, stopped, error
            "error": str,
        },
        pk="id",
        not_null={"created_at", "prompt", "status"},
    )
    db.table("runs").create_index(["created_at"])
    db.table("runs").enable_fts(["prompt", "output"], create_triggers=True)


@migrations(name="m002_branches")
def m002_branches(db: Database) -> None:
    """Runs can branch from a token of another run: remember which run, and where."""
    db.table("runs").add_column("parent_run_id", int)
    db.table("runs").add_column("branch_position", int)
    db.table("runs").create_index(["model", "backend"])


@migrations(name="m003_bench")
def m003_bench(db: Database) -> None:
    """Benchmark rows, one per cell and size, with the machine they were measured on."""
    db.table("bench").create(
        {"id": int, "created_at": str, "session": str, "model": str, "machine": str, "row": str,
         "backend": str, "variant": str, "provider": str, "decode_tokens_per_s": float},
        pk="id",
    )


@migrations(name="m004_search_substrings")
def m004_search_substrings(db: Database) -> None:
    """Search inside Chinese text: FTS5's trigram tokenizer instead of unicode61, existing rows indexed again.

    unicode61 takes a run of Han characters as one word, so `明月` could not find `床前明月光`.
    trigram indexes every 3-character substring (case-insensitively); shorter terms are matched
    with LIKE in `HistoryStore.search`. The index keeps its name `runs_fts`, so sqlite-utils and
    Datasette still find it. Plain `execute` calls: `executescript` (which `enable_fts` uses)
    would commit this migration's transaction halfway.
    """
    for trigger in ("runs_ai", "runs_ad", "runs_au"):
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    db.execute("DROP TABLE IF EXISTS runs_fts")
    db.execute('CREATE VIRTUAL TABLE runs_fts USING FTS5 (prompt, output, content="runs", tokenize="trigram")')
    db.execute("INSERT INTO runs_fts (runs_fts) VALUES ('rebuild')")  # index the rows already there
    db.execute("""CREATE TRIGGER runs_ai AFTER INSERT ON runs BEGIN
  INSERT INTO runs_fts (rowid, prompt, output) VALUES (new.rowid, new.prompt, new.output);
END""")
    db.execute("""CREATE TRIGGER runs_ad AFTER DELETE ON runs BEGIN
  INSERT INTO runs_fts (runs_fts, rowid, prompt, output) VALUES ('delete', old.rowid, old.prompt, old.output);
END""")
    db.execute("""CREATE TRIGGER runs_au AFTER UPDATE ON runs BEGIN
  INSERT INTO runs_fts (runs_fts, rowid, prompt, output) VALUES ('delete', old.rowid, old.prompt, old.output);
  INSERT INTO runs_fts (rowid, prompt, output) VALUES (new.rowid, new.prompt, new.output);
END""")


@migrations(name="m005_jobs")
def m005_jobs(db: Database) -> None:
    """Fine-tuning jobs, one row each, so a page reload or a second browser can follow the running one."""
    db.table("jobs").create(
        {
            "id": int,
            "created_at": str,  # UTC ISO 8601
            "updated_at": str,
            "status": str,  # queued, running, complete, cancelled, error
            "name": str,  # the new model's folder name
            "base_model": str,
            "settings": str,  # JSON: FineTuneSettings.to_dict()
            "progress": str,  # JSON: phase, step, total_steps, losses so far, ... (see training.finetune.execute_plan)
            "report": str,  # JSON: the training report, once complete
            "error": str,
            "pid": int,  # the process running it: a job whose process is gone was interrupted
        },
        pk="id",
        not_null={"created_at", "status"},
    )
    db.table("jobs").create_index(["created_at"])


@migrations(name="m006_groups")
def m006_groups(db: Database) -> None:
    """Runs drawn together (N samples of one prompt, the cells of a sweep) share a group id; each has its index in it."""
    db.table("runs").add_column("group_id", str)
    db.table("runs").add_column("sample_index", int)
    db.table("runs").create_index(["group_id"])


@migrations(name="m007_model_sha256")
def m007_model_sha256(db: Database) -> None:
    """The hash of the model's files a run was made with gets its own column (the Inside view compares it with the
    model's now). Runs saved before kept it in their metrics JSON: it moves from there to the column."""
    db.table("runs").add_column("model_sha256", str)
    db.execute("""UPDATE runs SET model_sha256 = json_extract(metrics, '$.model_sha256'),
                                  metrics = json_remove(metrics, '$.model_sha256')
                  WHERE json_valid(metrics) AND json_type(metrics, '$.model_sha256') IS NOT NULL""")


@migrations(name="m008_job_errors")
def m008_job_errors(db: Database) -> None:
    """A job's error is JSON: {"key", "params"} of playground/locales, so each reader sees it in their language.
    Errors saved before were English text: they become {"text": ...}."""
    db.execute("""UPDATE jobs SET error = json_object('text', error)
                  WHERE error IS NOT NULL AND NOT (json_valid(error) AND json_type(error) = 'object')""")


@migrations(name="m009_owners")
def m009_owners(db: Database) -> None:
    """Runs, fine-tune jobs and benchmark rows carry the login name of the user who made them, so that each person in
    a class sees their own; rows saved before belong to the local user (LOCAL_OWNER)."""
    for table in ("runs", "jobs", "bench"):
        db.table(table).add_column("owner", str, not_null_default=LOCAL_OWNER)
    db.table("runs").create_index(["owner", "id"])


@migrations(name="m010_search_whole_text")
def m010_search_whole_text(db: Database) -> None:
    """Search the run's text as it reads, the prompt and then the output, so a word split between them is found
    (`读书人` in a run whose prompt ends `读书` and whose output begins `人不是`). runs_fts indexes one column, `text`
    = prompt || output, trigram-tokenized; it is contentless (the text is in `runs` already), so a deleted row is
    removed with FTS5's 'delete' command given the text it was indexed with. Existing rows are indexed again."""
    whole = "coalesce({0}.prompt, '') || coalesce({0}.output, '')"
    for trigger in ("runs_ai", "runs_ad", "runs_au"):
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    db.execute("DROP TABLE IF EXISTS runs_fts")
    db.execute("CREATE VIRTUAL TABLE runs_fts USING FTS5 (text, content='', tokenize='trigram')")
    db.execute(f"INSERT INTO runs_fts (rowid, text) SELECT id, {whole.format('runs')} FROM runs")
    db.execute(f"""CREATE TRIGGER runs_ai AFTER INSERT ON runs BEGIN
  INSERT INTO runs_fts (rowid, text) VALUES (new.id, {whole.format('new')});
END""")
    db.execute(f"""CREATE TRIGGER runs_ad AFTER DELETE ON runs BEGIN
  INSERT INTO runs_fts (runs_fts, rowid, text) VALUES ('delete', old.id, {whole.format('old')});
END""")
    db.execute(f"""CREATE TRIGGER runs_au AFTER UPDATE OF prompt, output ON runs BEGIN
  INSERT INTO runs_fts (runs_fts, rowid, text) VALUES ('delete', old.id, {whole.format('old')});
  INSERT INTO runs_fts (rowid, text) VALUES (new.id, {whole.format('new')});
END""")


@migrations(name="m011_packed_tokens")
def m011_packed_tokens(db: Database) -> None:
    """Token records move from JSON text (`tokens`, about 160 kB for a 128-token run with 10 alternatives) to typed
    arrays in a compressed BLOB (`tokens_packed`, about 13 kB; see token_pack.py), so a term of classes fits on a
    disk. Every row is converted in place, exactly (unpack gives back the records the JSON held); `tokens` is then
    NULL. The space the JSON took is reused by new rows (VACUUM gives it back to the disk)."""
    db.table("runs").add_column("tokens_packed", bytes)
    last = 0
    while True:
        batch = db.execute("SELECT id, tokens FROM runs WHERE id > ? AND tokens IS NOT NULL ORDER BY id LIMIT 500", [last]).fetchall()
        if not batch:
            break
        db.conn.executemany("UPDATE runs SET tokens_packed = ?, tokens = NULL WHERE id = ?",
                            [(pack_tokens(json.loads(tokens)), run_id) for run_id, tokens in batch])
        last = batch[-1][0]



@migrations(name="m012_evaluations")
def m012_evaluations(db: Database) -> None:
    """Evaluations (playground.evaluate: the Evaluate tab, /evaluate, the command line), one row per model, backend and
    variant scored on a text: what was scored (the model's and the text's hashes), how (window, stride), the numbers,
    the machine (JSON), and whose it is (LOCAL_OWNER without a login), listed per owner as runs are."""
    db.table("evaluations").create(
        {
            "id": int,
            "created_utc": str,  # UTC ISO 8601
            "owner": str,
            "model": str,
            "model_sha256": str,
            "backend": str,
            "variant": str,
            "provider": str,
            "data_name": str,  # "pasted text", a file's name, "builtin:en"
            "data_sha256": str,  # of the scored text's UTF-8 bytes
            "window": int,
            "stride": int,
            "tokens": int,  # tokens scored
            "text_tokens": int,
            "bytes": int,
            "nll_nats": float,
            "perplexity": float,
            "bits_per_byte": float,
            "kl_to_fp32": float,  # NULL for fp32 and torch
            "seconds": float,
            "tokens_per_s": float,
            "machine": str,  # JSON: machine.machine_description()
        },
        pk="id",
        not_null={"created_utc", "owner", "model"},
        defaults={"owner": LOCAL_OWNER},
    )
    db.table("evaluations").create_index(["owner", "id"])


@migrations(name="m013_interventions")
def m013_interventions(db: Database) -> None:
    """A run made with an experiment's intervention (heads knocked out, a steering direction: experiments.Intervention)
    keeps it as JSON, so History shows it and a replay makes the same run; NULL for a run of the model as it is."""
    db.table("runs").add_column("intervention", str)


@migrations(name="m014_learn_progress")
def m014_learn_progress(db: Database) -> None:
    """The Learn tab's progress: one row per owner and chapter done, when, and what showed it (the check's verdict and
    the run it read, JSON), so each person in a class keeps their own path."""
    db.table("learn_progress").create(
        {"owner": str, "chapter": str, "done_utc": str, "evidence": str},
        pk=("owner", "chapter"),
        not_null={"owner", "chapter", "done_utc"},
        defaults={"owner": LOCAL_OWNER},
    )


@migrations(name="m016_lmeval")
def m016_lmeval(db: Database) -> None:
    """An evaluation's task results (lm-evaluation-harness: playground/evaluate/harness.py) as JSON beside its perplexity:
    {task: {"acc": ..., "acc_stderr": ..., "acc_norm": ..., "acc_norm_stderr": ..., "samples": n}}; NULL without tasks."""
    db.table("evaluations").add_column("tasks_json", str)


@migrations(name="m017_beams")
def m017_beams(db: Database) -> None:
    """A beam search run keeps its sequence score and (with its first returned sequence) the beam tree, as JSON, so History
    draws the tree again; NULL for every other run."""
    db.table("runs").add_column("beam", str)


# --- the store ----------------------------------------------------------------------------------


def _tokens_as_json(row: dict) -> dict:
    """A row of the runs table with its packed token records back in the `tokens` column as JSON text, as they were
    stored before m011 (exports show them so), and no `tokens_packed` column."""
    if "tokens_packed" in row:
        packed = row.pop("tokens_packed")
        if packed is not None:
            row["tokens"] = json.dumps(unpack_tokens(packed))
    return row


def _decode(row: dict) -> dict:
    """JSON columns parsed, whatever their shape (token records may gain fields, such as `bytes`); packed token
    records unpacked into `tokens`."""
    if "tokens_packed" in row:
        packed = row.pop("tokens_packed")
        if packed is not None:
            row["tokens"] = unpack_tokens(packed)
    for column in JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


def _decode_job(row: dict) -> dict:
    for column in JOB_JSON_COLUMNS:
        if isinstance(row.get(column), str):
            row[column] = json.loads(row[column])
    return row


def _process_alive(pid: int | None) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks without sending anything)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, owned by someone else
    return True


def _json_text(value, indent: int | None = None) -> str:
    """JSON with every language readable (not `\\u` escapes), still encodable as UTF-8.

    A lone surrogate (a browser can send one) stays a `\\udXXX` escape: valid JSON, and
    `json.loads` gives the same string back.
    """
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    return LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _utf8_safe(value):
    """Text that UTF-8 can encode (SQLite text, a CSV cell): a lone surrogate becomes U+FFFD.

    Only plain text columns go through this; the JSON columns keep a lone surrogate exactly, as an escape.
    """
    return LONE_SURROGATE.sub("\ufffd", value) if isinstance(value, str) else value


# A spreadsheet runs a cell that starts with one of these as a formula (`=HYPERLINK(...)` in a prompt
# would become a live link, `=cmd|...` worse): OWASP's CSV-injection advice is a leading apostrophe,
# which spreadsheets show as text and hide. JSONL keeps every text exactly.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _readable(value) -> str:
    """A setting's or metric's value as a person reads it: numbers to 4 significant digits, lists joined by " / "."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " / ".join(_readable(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}={_readable(v)}" for k, v in value.items() if v is not None and v != [] and v != {})
    return str(value)


def _readable_tokens(tokens: dict) -> str:
    """A run's generated tokens with the probability each was drawn with: `▁upon 34.2% · ▁a 80.1%` (▁ marks a space)."""
    shown = []
    for record in (tokens or {}).get("output", []):
        prob = record.get("prob")
        shown.append(record.get("text", "").replace(" ", "▁") + (f" {prob:.1%}" if prob is not None else ""))
    return " · ".join(shown)


def _csv_cell(column: str, value):
    """A CSV cell as a spreadsheet shows it to a person: settings and metrics as `name=value; ...`, the tokens as the
    generated tokens with their probabilities (the JSON export keeps every field); any text a spreadsheet would run as
    a formula made plain text."""
    if column in JSON_COLUMNS and isinstance(value, str):
        data = json.loads(value)
        value = _readable_tokens(data) if column == "tokens" else _readable(data) if data is not None else ""
    value = _utf8_safe(value)
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _search_words(query: str) -> list[str]:
    """The query's words: runs of letters, digits, `_` and combining marks (which Hindi and Thai words contain).

    Everything else only separates words, so no character of the query is FTS syntax.
    """
    words, word = [], []
    for char in query:
        if char.isalnum() or char == "_" or unicodedata.category(char).startswith("M"):
            word.append(char)
        elif word:
            words.append("".join(word))
            word = []
    if word:
        words.append("".join(word))
    return words


def match_snippet(prompt: str, output: str, words: list[str], context: int = 24) -> dict | None:
    """Where the first of `words` to occur is in a run's text (prompt then output), case-insensitively:
    {"where": "prompt" | "output" | "both" (it spans the two), "before", "match", "after"}, with up to `context`
    characters either side ("…" where cut); cut between graphemes only, never inside a character. None if absent."""
    import regex

    text = prompt + output
    found = [m for m in (regex.search(regex.escape(w), text, regex.IGNORECASE | regex.V1) for w in words) if m]
    if not found:
        return None
    first = min(found, key=lambda m: m.start())
    start, end = first.span()
    where = "prompt" if end <= len(prompt) else "output" if start >= len(prompt) else "both"
    before = regex.findall(r"\X", text[:start])
    after = regex.findall(r"\X", text[end:])
    return {"where": where, "match": text[start:end],
            "before": ("…" if len(before) > context else "") + "".join(before[-context:]),
            "after": "".join(after[:context]) + ("…" if len(after) > context else "")}


def _like_pattern(word: str) -> str:
    """`%word%` for LIKE ... ESCAPE '\\', the word taken literally."""
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _owned(where: str, args: list, owner: str | None) -> tuple[str, list]:
    """`where` and its arguments, narrowed to `owner`'s rows when an owner is given."""
    if owner is None:
        return where, args
    return f"({where}) AND owner = ?", [*args, owner]


class HistoryStore:
    """A history file shared by all of Gradio's worker threads (and other processes).

    Every operation opens its own connection: a Gradio streaming generator resumes on any thread,
    and a sqlite3 connection refuses use from a thread other than its creator's. Every write
    starts with BEGIN IMMEDIATE, so concurrent writers queue on the busy timeout; a deferred
    transaction that reads (the FTS triggers do) and then writes fails at once with "database is
    locked" when another writer got there first, whatever the timeout.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path).expanduser()
        self._check_readable()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as db:
                db.enable_wal()
                migrations.apply(db)
        except sqlite3.Error as exc:
            raise HistoryUnavailable(f"History file {self.path} cannot be used ({exc}). It was left untouched.") from exc

    def _check_readable(self) -> None:
        """Refuse a file that is not a healthy SQLite database, reading it only (it is never modified)."""
        if not self.path.exists():
            return
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
            try:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise HistoryUnavailable(f"History file {self.path} is not a readable SQLite database ({exc}); it was left untouched. "
                                     "Move it aside or start with --db PATH to keep a new history.") from exc
        if result != "ok":
            raise HistoryUnavailable(f"History file {self.path} is damaged ({result}); it was left untouched. "
                                     "Move it aside or start with --db PATH to keep a new history.")

    @contextmanager
    def _connect(self) -> Iterator[Database]:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            yield Database(conn)
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[Database]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting up to the busy timeout
            try:
                yield db
            except BaseException:
                db.rollback()
                raise
            db.commit()

    # --- writing --------------------------------------------------------------------------------

    def save_run(self, row: dict) -> int:
        """Insert a run's row (`records.saved_row`: the runs table's columns, the JSON ones as Python values); returns its id."""
        if row.get("status") not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {row.get('status')!r}")
        row = {"created_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")} | {
            column: json.dumps(value) if column in JSON_COLUMNS else _utf8_safe(value) for column, value in row.items()
            if column != "tokens"} | {"tokens_packed": pack_tokens(row.get("tokens"))}  # token records: typed arrays (m011)
        with self._write() as db:
            return db.table("runs").insert(row).last_pk

    def save_bench(self, rows: list[dict], model: str, machine: dict, owner: str = LOCAL_OWNER) -> str:
        """Store one benchmark's rows (whole rows as JSON, key columns for queries) as `owner`'s; returns its session id."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        session = now
        records = [{"created_at": now, "session": session, "model": model, "machine": json.dumps(machine), "row": json.dumps(r),
                    "backend": r["backend"], "variant": r["variant"], "provider": r["provider"],
                    "decode_tokens_per_s": r["decode_tokens_per_s"], "owner": owner} for r in rows]
        with self._write() as db:
            db.table("bench").insert_all(records)
        return session

    def save_evaluation(self, evaluation: dict, machine: dict, owner: str = LOCAL_OWNER) -> int:
        """Store one evaluation (`evaluate.Evaluation.to_dict()`) as `owner`'s, with the machine it ran on; returns its id."""
        evaluation = dict(evaluation)
        tasks = evaluation.pop("tasks", None)
        row = {"created_utc": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "owner": owner,
               **{column: _utf8_safe(value) for column, value in evaluation.items()}, "machine": json.dumps(machine),
               "tasks_json": json.dumps(tasks, ensure_ascii=False) if tasks else None}
        with self._write() as db:
            return db.table("evaluations").insert(row).last_pk

    def evaluations(self, limit: int = 100, owner: str | None = None) -> list[dict]:
        """The newest evaluations first (`owner`'s only, when given), their machine and task results as dicts (`tasks`:
        None without tasks)."""
        with self._connect() as db:
            rows = list(db.table("evaluations").rows_where(*_owned("1", [], owner), order_by="id desc", limit=limit))
        return [row | {"machine": json.loads(row["machine"]) if row.get("machine") else None,
                       "tasks": json.loads(row["tasks_json"]) if row.get("tasks_json") else None} for row in rows]

    def delete(self, run_id: int, owner: str | None = None) -> bool:
        """Delete one run (only if it is `owner`'s, when given); False when there was no such run."""
        where, args = _owned("id = ?", [run_id], owner)
        with self._write() as db:
            cursor = db.execute(f"DELETE FROM runs WHERE {where}", args)
            return cursor.rowcount > 0

    # --- reading --------------------------------------------------------------------------------

    def get(self, run_id: int, owner: str | None = None) -> dict | None:
        """Run `run_id` with everything saved with it; None when there is none (or it is not `owner`'s, when given)."""
        with self._connect() as db:
            rows = list(db.table("runs").rows_where(*_owned("id = ?", [run_id], owner)))
        return _decode(rows[0]) if rows else None

    def group(self, group_id: str, full: bool = False, owner: str | None = None) -> list[dict]:
        """The runs of one group (N samples, a sweep), in the order they were drawn."""
        columns = None if full else list(LIST_COLUMNS)
        with self._connect() as db:
            rows = db.table("runs").rows_where(*_owned("group_id = ?", [group_id], owner), order_by="id",
                                               select=", ".join(columns) if columns else "*")
            return [_decode(r) for r in rows]

    def group_ids(self, group_id: str, owner: str | None = None) -> list[int]:
        """The run ids of one group, for export."""
        return [row["id"] for row in self.group(group_id, owner=owner)]

    def _filters(self, model: str | None, backend: str | None, owner: str | None = None) -> tuple[str | None, dict]:
        clauses, args = [], {}
        if owner is not None:
            clauses.append("owner = :owner")
            args["owner"] = owner
        if model:
            clauses.append("model = :model")
            args["model"] = model
        if backend:
            clauses.append("backend = :backend")
            args["backend"] = backend
        return (" and ".join(clauses) or None), args

    def recent(self, limit: int = 100, model: str | None = None, backend: str | None = None, full: bool = False,
               owner: str | None = None) -> list[dict]:
        """Newest first (`owner`'s only, when given); without `full`, the per-token records are left out (they are large)."""
        where, args = self._filters(model, backend, owner)
        return self._newest(where or "1", args, limit, "*" if full else ", ".join(f"runs.{c}" for c in LIST_COLUMNS))

    def _newest(self, where: str, args: dict, limit: int, columns: str) -> list[dict]:
        """The newest `limit` runs that `where` finds. Their ids first, from the indexes alone where they suffice, then
        the columns of just those rows: at 100,000 runs, a filter that matches a third of them would otherwise read
        every match's text before the sort (100 ms; 3 ms so; scripts/history_bench.py)."""
        sql = (f"SELECT {columns} FROM runs WHERE runs.id IN (SELECT runs.id FROM runs WHERE {where} ORDER BY runs.id DESC "
               "LIMIT :limit) ORDER BY runs.id DESC")
        with self._connect() as db:
            cursor = db.execute(sql, args | {"limit": limit})
            names = [d[0] for d in cursor.description]
            return [_decode(dict(zip(names, values))) for values in cursor.fetchall()]

    def search(self, query: str, limit: int = 100, model: str | None = None, backend: str | None = None,
               owner: str | None = None) -> list[dict]:
        """Search prompts and outputs for the query's words, as substrings in any script.

        Every word must appear in the run's text (its prompt followed by its output, so a word may begin in the
        one and end in the other), case-insensitively (`明月` finds `床前明月光`, `value` finds `values`); each run
        found has a `match`: where the first word is (match_snippet). The query is taken literally: FTS operators, quotes
        and punctuation are not syntax, so no input can be a syntax error. Newest first. An empty query lists recent runs; one with no words finds nothing. `group:ID` lists
        the runs of one group (N samples, a sweep) in the order they were drawn. With `owner`, only that user's runs.
        """
        if not query or not query.strip():
            return self.recent(limit, model, backend, owner=owner)
        if query.strip().startswith(GROUP_PREFIX):  # "group:ID": the runs of one batch or sweep, in order
            return self.group(query.strip()[len(GROUP_PREFIX):].strip(), owner=owner)[:limit]
        words = _search_words(query)
        if not words:
            return []
        where, args = self._filters(model, backend, owner)
        clauses = [where] if where else []
        # Words too short for the trigram index: LIKE on the runs table (the FTS table cannot do it).
        # LIKE ignores case for ASCII letters only; Han characters have none.
        for i, word in enumerate(w for w in words if len(w) < TRIGRAM_MIN_CHARS):
            clauses.append(f"(coalesce(prompt, '') || coalesce(output, '')) LIKE :like{i} ESCAPE '\\'")
            args[f"like{i}"] = _like_pattern(word)
        # Each longer word a quoted FTS5 string: '"word"' can hold nothing but a phrase, and a
        # trigram phrase matches wherever the word appears, inside a longer word too.
        fts_query = " ".join('"' + w.replace('"', '""') + '"' for w in words if len(w) >= TRIGRAM_MIN_CHARS)
        if fts_query:
            clauses.insert(0, "runs.id IN (SELECT rowid FROM runs_fts WHERE runs_fts MATCH :fts)")
            args["fts"] = fts_query
        # Newest first, as the History tab lists runs: ranking by relevance (bm25) scores every match, 100 ms for a
        # common word at 100,000 runs (scripts/history_bench.py), and a prompt of a few words ranks poorly anyway.
        rows = self._newest(" AND ".join(clauses), args, limit, ", ".join(f"runs.{c}" for c in LIST_COLUMNS))
        for row in rows:
            row["match"] = match_snippet(row.get("prompt") or "", row.get("output") or "", words)
        return rows

    def distinct(self, column: str, owner: str | None = None) -> list[str]:
        """The values of `column` (model, backend or variant) in the runs (`owner`'s, when given)."""
        if column not in {"model", "backend", "variant"}:
            raise ValueError(column)
        where, args = _owned(f"{column} IS NOT NULL", [], owner)
        with self._connect() as db:
            return [r[0] for r in db.execute(f"SELECT DISTINCT {column} FROM runs WHERE {where} ORDER BY 1", args).fetchall()]

    def count(self, owner: str | None = None) -> int:
        where, args = _owned("1", [], owner)
        with self._connect() as db:
            return db.execute(f"SELECT count(*) FROM runs WHERE {where}", args).fetchone()[0]

    def revision(self, owner: str | None = None) -> tuple[int, int]:
        """(newest run id, number of runs), of `owner`'s runs when given: changes whenever a run is saved or deleted,
        so a view of the runs can tell cheaply whether it is out of date."""
        where, args = _owned("1", [], owner)
        with self._connect() as db:
            newest, count = db.execute(f"SELECT coalesce(max(id), 0), count(*) FROM runs WHERE {where}", args).fetchone()
            return newest, count

    # --- the Learn tab's progress ---------------------------------------------------------------------

    def mark_learned(self, chapter: str, evidence: dict, owner: str = LOCAL_OWNER) -> None:
        """Record that `owner` has done `chapter` (again: the newest evidence replaces the older)."""
        row = {"owner": owner, "chapter": chapter, "done_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "evidence": json.dumps(evidence)}  # ASCII escapes: any text of a run fits
        with self._write() as db:
            db.table("learn_progress").upsert(row, pk=("owner", "chapter"))

    def learned(self, owner: str = LOCAL_OWNER) -> dict[str, str]:
        """The chapters `owner` has done: chapter id -> when (UTC ISO 8601). Only that owner's: an admin's path is theirs."""
        with self._connect() as db:
            return {row["chapter"]: row["done_utc"] for row in db.table("learn_progress").rows_where("owner = ?", [owner])}

    # --- fine-tuning jobs ---------------------------------------------------------------------------

    def create_job(self, name: str, base_model: str, settings: dict, status: str = "queued", owner: str = LOCAL_OWNER) -> int:
        """Insert a fine-tuning job of `owner`'s for this process; returns its id."""
        if status not in JOB_STATUSES:
            raise ValueError(f"status must be one of {JOB_STATUSES}, not {status!r}")
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        row = {"created_at": now, "updated_at": now, "status": status, "name": _utf8_safe(name), "base_model": _utf8_safe(base_model),
               "settings": _json_text(settings), "progress": _json_text({}), "report": None, "error": None, "pid": os.getpid(),
               "owner": owner}
        with self._write() as db:
            return db.table("jobs").insert(row).last_pk

    def update_job(self, job_id: int, *, status: str | None = None, progress: dict | None = None, report: dict | None = None,
                   error: dict | None = None) -> None:
        """Change a job's status, progress, report or error (only the ones given). An error is {"key", "params"} of
        playground/locales ({"text"} for one that has no key)."""
        if status is not None and status not in JOB_STATUSES:
            raise ValueError(f"status must be one of {JOB_STATUSES}, not {status!r}")
        changes: dict = {"updated_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        if status is not None:
            changes["status"] = status
        if progress is not None:
            changes["progress"] = _json_text(progress)
        if report is not None:
            changes["report"] = _json_text(report)
        if error is not None:
            changes["error"] = _json_text(error)
        with self._write() as db:
            db.table("jobs").update(job_id, changes)

    def get_job(self, job_id: int, owner: str | None = None) -> dict | None:
        with self._connect() as db:
            rows = list(db.table("jobs").rows_where(*_owned("id = ?", [job_id], owner)))
        return _decode_job(rows[0]) if rows else None

    def latest_job(self, owner: str | None = None) -> dict | None:
        """The newest fine-tuning job (`owner`'s, when given), whatever its status."""
        with self._connect() as db:
            rows = list(db.table("jobs").rows_where(*_owned("1", [], owner), order_by="id desc", limit=1))
        return _decode_job(rows[0]) if rows else None

    def fail_interrupted_jobs(self) -> int:
        """Mark queued or running jobs whose process is gone as errors (the app stopped while they ran); returns how many."""
        with self._write() as db:
            rows = list(db.table("jobs").rows_where("status in ('queued', 'running')"))
            gone = [row["id"] for row in rows if not _process_alive(row.get("pid"))]
            for job_id in gone:
                db.table("jobs").update(job_id, {"status": "error", "error": json.dumps({"key": "finetune.interrupted", "params": {}}),
                                                 "updated_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")})
        return len(gone)

    # --- export ---------------------------------------------------------------------------------

    def export(self, path: Path | str, fmt: str, run_ids: list[int] | None = None, owner: str | None = None) -> int:
        """Write runs (all, or `run_ids`; of those, `owner`'s only when given) as JSONL (everything, JSON columns
        nested) or CSV (readable cells: see _csv_cell).

        Both keep every language readable. JSONL is UTF-8 without a BOM, one run a line, every text
        exact. CSV is UTF-8 with a BOM, because a spreadsheet reads a CSV without one in the system's
        code page (GBK on a Chinese Windows), and a text cell that a spreadsheet would run as a formula
        (starting with = + - @) gets a leading apostrophe.
        """
        path = Path(path)
        with self._connect() as db:
            if run_ids is None:
                rows = list(db.table("runs").rows_where(*_owned("1", [], owner), order_by="id"))
            else:
                marks = ", ".join("?" for _ in run_ids)
                rows = list(db.table("runs").rows_where(*_owned(f"id in ({marks})", list(run_ids), owner), order_by="id"))
        if fmt == "jsonl":
            with open(path, "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(_json_text(_decode(dict(row))) + "\n")  # tokens unpacked, nested
        elif fmt == "csv":
            # newline="": the csv module writes its own line ends and keeps newlines inside quoted fields.
            with open(path, "w", encoding="utf-8-sig", newline="") as handle:
                rows = [_tokens_as_json(dict(row)) for row in rows]
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["id"])
                writer.writeheader()
                writer.writerows({column: _csv_cell(column, value) for column, value in row.items()} for row in rows)
        else:
            raise PlaygroundError(key="history.unknown_format", field="format", name=fmt)
        return len(rows)


def open_history(path: Path | str | None) -> tuple[HistoryStore | None, str | None]:
    """The store, or (None, why it is disabled): a bad history file never stops the app."""
    try:
        return HistoryStore(path or default_db_path()), None
    except (HistoryUnavailable, OSError) as exc:
        return None, str(exc)


# --- command line -------------------------------------------------------------------------------


def _summary(row: dict) -> str:
    metrics = row.get("metrics") or {}
    tps = metrics.get("decode_tokens_per_s")
    prompt = " ".join((row.get("prompt") or "").split())[:50]
    group = f"  [{row['group_id']} #{row['sample_index']}]" if row.get("group_id") else ""
    group += f"  @{row['owner']}" if row.get("owner") else ""
    return (f"{row['id']:>5}  {row['created_at'][:19]}  {row.get('model') or '':<14} {row.get('backend') or ''}/{row.get('variant') or '':<5} "
            f"{(f'{tps:.1f} tok/s' if tps else '-'):>11}  {row['status']:<8}  {prompt}{group}")


def _run_json(row: dict) -> str:
    """One run as JSON for the terminal: readable where the terminal can show it, all `\\u` escapes where
    it cannot (`\\U0001f600`, which backslashreplace would print, is not valid JSON)."""
    text = _json_text(row, indent=2)
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row, indent=2)
    return text


def _tolerate_unencodable_output() -> None:
    """A terminal that cannot show a character (PYTHONIOENCODING=ascii, an emoji on a GBK console) gets
    a `\\uXXXX` escape instead of a traceback: prompts, paths and argparse's messages may hold any text."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _tolerate_unencodable_output()
    parser = argparse.ArgumentParser(prog="python -m playground.history", description="Browse the playground's run history.")
    parser.add_argument("--db", type=Path, default=None, help=f"history file (default: ${DB_ENV} or {default_db_path()})")
    parser.add_argument("--owner", default=None, metavar="USER",
                        help="only the runs of this login ('' for those made without a login; default: everyone's)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="recent runs")
    p_list.add_argument("--limit", type=int, default=20)
    p_list.add_argument("--model")
    p_list.add_argument("--backend")
    p_search = sub.add_parser("search", help="find runs whose prompt or output contains every word")
    p_search.add_argument("query")
    p_search.add_argument("--limit", type=int, default=20)
    p_show = sub.add_parser("show", help="one run as JSON")
    p_show.add_argument("id", type=int)
    p_export = sub.add_parser("export", help="write runs as JSONL or CSV")
    p_export.add_argument("path", type=Path)
    p_export.add_argument("--format", choices=["jsonl", "csv"], default=None, help="default: from the file extension")
    p_export.add_argument("--ids", type=int, nargs="*", default=None)
    p_export.add_argument("--group", default=None, help="only the runs of this group (N samples or a sweep)")
    p_group = sub.add_parser("group", help="the runs of one group (N samples or a sweep)")
    p_group.add_argument("group_id")
    p_delete = sub.add_parser("delete", help="delete one run")
    p_delete.add_argument("id", type=int)
    args = parser.parse_args(argv)

    try:
        store = HistoryStore(args.db or default_db_path())
        if args.command == "list":
            for row in store.recent(args.limit, args.model, args.backend, owner=args.owner):
                print(_summary(row))
        elif args.command == "search":
            for row in store.search(args.query, args.limit, owner=args.owner):
                print(_summary(row))
        elif args.command == "show":
            row = store.get(args.id, owner=args.owner)
            if row is None:
                print(f"error: no run with id {args.id}", file=sys.stderr)
                return 1
            print(_run_json(row))
        elif args.command == "export":
            fmt = args.format or ("csv" if args.path.suffix == ".csv" else "jsonl")
            ids = args.ids
            if args.group:
                ids = [i for i in store.group_ids(args.group) if ids is None or i in ids]
            print(f"Exported {store.export(args.path, fmt, ids, owner=args.owner)} runs to {args.path}")
        elif args.command == "group":
            rows = store.group(args.group_id, owner=args.owner)
            if not rows:
                print(f"error: no runs in group {args.group_id}", file=sys.stderr)
                return 1
            for row in rows:
                print(_summary(row))
        elif args.command == "delete":
            if not store.delete(args.id, owner=args.owner):
                print(f"error: no run with id {args.id}", file=sys.stderr)
                return 1
            print(f"Deleted run {args.id}")
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
