"""The SQLite history on real files: round trips, concurrent writers, migrations, bad files, search, export, CLI."""

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest
from sqlite_utils import Database

from playground.config import GenerationSettings
from playground.generation import generate
from playground.records import result_from_saved, saved_row
from playground.history import DB_ENV, HistoryStore, default_db_path, main, match_snippet, migrations, open_history
from playground.service import Playground

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "history-v1.db"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path):
    return HistoryStore(tmp_path / "history.db")


@pytest.fixture(scope="module")
def sample_result(tiny_backend, tiny_source):
    """A real generation."""
    return generate(tiny_backend, tiny_source, "The value <b>of</b> the", GenerationSettings(max_new_tokens=8, seed=2))


@pytest.fixture(scope="module")
def sample_run(sample_result):
    """A real generation's row, as the app stores it."""
    return saved_row(sample_result, "complete", model_sha256="0" * 64)


def test_saved_run_round_trips_into_the_views(store, sample_result, sample_run):
    run_id = store.save_run(sample_run)
    row = store.get(run_id)
    assert row["prompt"] == sample_result.prompt and row["output"] == sample_result.text
    assert row["settings"] == sample_run["settings"] and row["settings"]["seed"] == 2
    assert row["created_at"].endswith("+00:00")
    assert row["tokens"] == sample_run["tokens"] and row["model_sha256"] == "0" * 64
    assert row["metrics"]["decode_tokens_per_s"] == sample_result.decode_tokens_per_s
    # ... back into what the UI shows, and into the same row again: one mapping, both ways.
    restored = result_from_saved(row)
    assert [t.token_id for t in restored.tokens] == [t.token_id for t in sample_result.tokens]
    assert restored.settings == sample_result.settings and restored.finish_reason == sample_result.finish_reason
    assert restored.prompt_perplexity == pytest.approx(sample_result.prompt_perplexity)
    assert saved_row(restored, row["status"], row["error"], row["model_sha256"]) == {column: row[column] for column in sample_run}


def test_file_is_wal_and_plain_for_other_tools(store, sample_run):
    store.save_run(sample_run)
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    settings_json = conn.execute("SELECT settings FROM runs").fetchone()[0]
    assert json.loads(settings_json)["seed"] == 2  # a JSON text column, as Datasette and the sqlite-utils CLI expect
    conn.close()


def test_every_run_end_is_saved_once(tiny_source, tmp_path):
    store = HistoryStore(tmp_path / "h.db")
    playground = Playground(tiny_source, device="cpu", history=store)
    settings = GenerationSettings(max_new_tokens=20, seed=1)

    complete = playground.start("An object", settings)
    list(playground.stream(complete))
    stopped = playground.start("An object", settings, session="s")
    for i, _ in enumerate(playground.stream(stopped, "s")):
        if i == 2:
            playground.stop("s")
    abandoned = playground.start("An object", settings)
    stream = playground.stream(abandoned)
    next(stream), next(stream)
    stream.close()  # what Gradio does when the browser goes away

    rows = {r["id"]: r for r in store.recent()}
    assert len(rows) == 3
    assert rows[complete.result.run_id]["status"] == "complete"
    assert rows[stopped.result.run_id]["status"] == "stopped" and rows[stopped.result.run_id]["output"] == stopped.result.text
    assert rows[abandoned.result.run_id]["status"] == "stopped"


def test_failed_run_is_saved_as_an_error(tiny_source, tmp_path):
    from playground.generation import Generation

    store = HistoryStore(tmp_path / "h.db")
    playground = Playground(tiny_source, device="cpu", history=store)
    # A real failure inside the model: a token id beyond the embedding table.
    run = Generation(playground.backend(), tiny_source, "", GenerationSettings(max_new_tokens=5, seed=1), prompt_ids=[10**6])
    with pytest.raises(IndexError):
        list(playground.stream(run))
    row = store.get(store.recent()[0]["id"])
    assert row["status"] == "error" and "IndexError" in row["error"]


def test_concurrent_writers_lose_nothing(store, sample_run):
    """8 threads x 25 runs at once, FTS triggers included: all 200 rows, no 'database is locked'."""
    barrier = threading.Barrier(8)

    def writer(thread_no: int) -> list[int]:
        barrier.wait()
        return [store.save_run(sample_run | {"prompt": f"writer{thread_no} run {i}"}) for i in range(25)]

    with ThreadPoolExecutor(8) as pool:
        ids = [i for batch in pool.map(writer, range(8)) for i in batch]
    assert len(set(ids)) == 200 and store.count() == 200
    assert len(store.search("writer3", limit=500)) == 25


def test_a_streaming_run_resumed_on_other_threads_is_saved(tiny_source, tmp_path):
    """Gradio resumes a streaming generator on whatever worker thread is free: the save must not care."""
    store = HistoryStore(tmp_path / "h.db")
    playground = Playground(tiny_source, device="cpu", history=store)
    stream = playground.stream(playground.start("An object", GenerationSettings(max_new_tokens=12, seed=1)))
    with ThreadPoolExecutor(4) as pool:
        while True:
            if pool.submit(next, stream, None).result() is None:
                break
    assert store.count() == 1


def test_first_schema_upgrades_in_place_without_losing_rows(tmp_path):
    db_path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE_V1, db_path)
    store = HistoryStore(db_path)
    rows = store.recent()
    assert len(rows) == 3 and {r["prompt"] for r in rows} >= {"A class is", "<b>bold</b> prompt"}
    conn = sqlite3.connect(db_path)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY applied_at")]
    conn.close()
    assert {"parent_run_id", "branch_position"} <= columns
    assert applied == [m.name for m in migrations._migrations]
    assert [r["id"] for r in store.search("template")] == [2]  # the old rows are still searchable
    new_id = store.save_run({"prompt": "after upgrade", "output": "ok", "status": "complete", "parent_run_id": 2,
                             "branch_position": 3})
    assert store.get(new_id)["parent_run_id"] == 2


def test_fingerprints_move_from_the_metrics_to_their_column(tmp_path):
    """Runs saved before m007 kept their model's hash in the metrics JSON: the migration moves it to its column."""
    path = tmp_path / "h.db"
    with closing(sqlite3.connect(path)) as conn:
        db = Database(conn)
        migrations.apply(db, stop_before="m007_model_sha256")
        for metrics in ({"ttft_ms": 1.5, "model_sha256": "ab" * 32}, {"ttft_ms": 2.0}, None):
            db.table("runs").insert({"created_at": "2026-12-01T00:00:00.000+00:00", "prompt": "old", "status": "complete",
                                     "metrics": None if metrics is None else json.dumps(metrics)})
        conn.commit()
    store = HistoryStore(path)
    rows = [store.get(i) for i in (1, 2, 3)]
    assert [row["model_sha256"] for row in rows] == ["ab" * 32, None, None]
    assert [row["metrics"] for row in rows] == [{"ttft_ms": 1.5}, {"ttft_ms": 2.0}, None]
    assert {row["id"] for row in store.search("old")} == {1, 2, 3}  # still found: the update kept the index


def test_job_errors_saved_as_english_text_are_kept_as_text(tmp_path):
    """Before m008 a fine-tune job's error was English text; now it is a locale key and parameters."""
    path = tmp_path / "h.db"
    with closing(sqlite3.connect(path)) as conn:
        db = Database(conn)
        migrations.apply(db, stop_before="m008_job_errors")
        for error in ("Training failed: RuntimeError: boom. Nothing was saved.", None):
            db.table("jobs").insert({"created_at": "2026-12-01T00:00:00.000+00:00", "updated_at": "2026-12-01T00:00:00.000+00:00",
                                     "status": "error" if error else "complete", "name": "old", "base_model": "demo-gpt2",
                                     "error": error})
        conn.commit()
    store = HistoryStore(path)
    assert [store.get_job(i)["error"] for i in (1, 2)] == [{"text": "Training failed: RuntimeError: boom. Nothing was saved."}, None]
    store.update_job(2, status="error", error={"key": "finetune.crashed", "params": {"kind": "ValueError", "error": "坏了"}})
    assert store.get_job(2)["error"] == {"key": "finetune.crashed", "params": {"kind": "ValueError", "error": "坏了"}}


@pytest.mark.parametrize("content", [b"this is not a database" * 100, b"", "truncated"])
def test_bad_file_disables_history_and_is_left_untouched(tmp_path, content):
    path = tmp_path / "history.db"
    if content == "truncated":
        shutil.copyfile(FIXTURE_V1, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    store, reason = open_history(path)
    if content == b"":
        assert store is not None  # an empty file is a valid, empty database
        return
    assert store is None and "left untouched" in reason and str(path) in reason
    assert path.read_bytes() == before
    assert not Path(str(path) + "-wal").exists()


def test_generation_still_works_when_saving_fails(tiny_source, tmp_path):
    store = HistoryStore(tmp_path / "h.db")
    playground = Playground(tiny_source, device="cpu", history=store)
    store.path.unlink()
    store.path.mkdir()  # the file vanished and something else took its place
    run = playground.start("An object", GenerationSettings(max_new_tokens=5, seed=1))
    assert len(list(playground.stream(run))) == 5
    assert run.result.run_id is None and "not saved to the history" in run.result.notices[-1]


@pytest.mark.parametrize("query", ['"', "AND", "OR NOT", "NEAR(", "*", "a OR", "prompt:x", "'; DROP TABLE runs; --", "(((", "^", "\x00", "😀"])
def test_hostile_search_queries_never_raise(store, sample_run, query):
    store.save_run(sample_run)
    assert isinstance(store.search(query), list)
    assert store.count() == 1


def test_search_and_filters(store, sample_run):
    store.save_run(sample_run | {"prompt": "alpha beta"})
    store.save_run(sample_run | {"prompt": "gamma", "output": "beta delta", "backend": "onnx", "status": "stopped"})
    assert {r["prompt"] for r in store.search("beta")} == {"alpha beta", "gamma"}
    assert [r["prompt"] for r in store.search("beta", backend="onnx")] == ["gamma"]
    assert [r["prompt"] for r in store.recent(backend="torch")] == ["alpha beta"]
    assert store.distinct("backend") == ["onnx", "torch"]


def test_exports_parse(store, sample_run, tmp_path):
    ids = [store.save_run(sample_run | {"prompt": f'p{i}, "quoted"\nline'}) for i in range(3)]
    assert store.export(tmp_path / "all.jsonl", "jsonl") == 3
    lines = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == ids and lines[0]["tokens"] == sample_run["tokens"]
    assert store.export(tmp_path / "some.csv", "csv", ids[1:]) == 2
    with open(tmp_path / "some.csv", newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["id"]) for r in rows] == ids[1:] and rows[0]["prompt"] == 'p1, "quoted"\nline'
    assert "seed=2" in rows[0]["settings"].split("; ")


def test_delete(store, sample_run):
    run_id = store.save_run(sample_run)
    assert store.delete(run_id) and store.get(run_id) is None
    assert store.delete(run_id) is False and store.delete(12345) is False
    assert store.search(sample_run["prompt"].split()[0]) == []  # the FTS index follows


def test_default_location_is_outside_the_repo_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv(DB_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "gpt2-playground" / "history.db"
    monkeypatch.setenv(DB_ENV, str(tmp_path / "elsewhere.db"))
    assert default_db_path() == tmp_path / "elsewhere.db"


def test_command_line(store, sample_run, tmp_path, capsys):
    run_id = store.save_run(sample_run)
    db = ["--db", str(store.path)]
    assert main([*db, "list"]) == 0 and f"{run_id:>5}" in capsys.readouterr().out
    assert main([*db, "search", "value"]) == 0 and "The value" in capsys.readouterr().out
    assert main([*db, "show", str(run_id)]) == 0 and json.loads(capsys.readouterr().out)["id"] == run_id
    assert main([*db, "export", str(tmp_path / "x.csv")]) == 0 and (tmp_path / "x.csv").is_file()
    capsys.readouterr()
    assert main([*db, "delete", "999"]) == 1 and "no run with id 999" in capsys.readouterr().err
    assert main([*db, "delete", str(run_id)]) == 0 and store.count() == 0


def test_branch_keeps_the_run_up_to_the_token_and_records_its_parent(tiny_source, tmp_path):
    from playground.errors import PlaygroundError

    store = HistoryStore(tmp_path / "h.db")
    playground = Playground(tiny_source, device="cpu", history=store)
    parent = playground.start("The value of", GenerationSettings(max_new_tokens=12, seed=4))
    list(playground.stream(parent))
    parent = parent.result
    alternative = next(tid for tid, *_ in parent.tokens[3].top if tid != parent.tokens[3].token_id)

    branch = playground.branch(parent, 3, alternative)
    list(playground.stream(branch))
    kept = [t.token_id for t in parent.prompt_tokens + parent.tokens[:3]] + [alternative]
    assert [t.token_id for t in branch.result.prompt_tokens] == kept
    assert branch.result.prompt.startswith(parent.prompt) and len(branch.result.tokens) == 12
    assert branch.result.settings == parent.settings and branch.result.info == parent.info
    row = store.get(branch.result.run_id)
    assert row["parent_run_id"] == parent.run_id and row["branch_position"] == parent.tokens[3].position

    again = playground.branch(parent, 3, alternative)
    list(playground.stream(again))
    assert again.result.text == branch.result.text  # same seed, same branch, same continuation
    with pytest.raises(PlaygroundError, match="not in that run"):
        playground.branch(parent, 99, alternative)


# --- every language: search inside Chinese text, exports a Chinese spreadsheet opens, a terminal that can't show it ---

POEM, CAT, MIXED, ENGLISH = "床前明月光", "我家的猫喜欢睡觉", "GPT-2模型的注意力", "The return value of a function"


@pytest.fixture
def multilingual(store, sample_run):
    """Four runs, one per kind of text; returns {prompt: id}."""
    outputs = {POEM: "疑是地上霜", CAT: "", MIXED: " heads", ENGLISH: " is its result"}
    return {prompt: store.save_run(sample_run | {"prompt": prompt, "output": text}) for prompt, text in outputs.items()}


@pytest.mark.parametrize("query, found", [
    ("明月", {POEM}),  # 2 characters inside a run of Han characters: no word boundary to find
    ("明月光", {POEM}),
    ("地上", {POEM}),  # in the output
    ("猫", {CAT}),
    ("GPT-2 模型", {MIXED}),
    ("gpt 注意力", {MIXED}),
    ("value", {ENGLISH}),
    ("VALUE Function", {ENGLISH}),
    ("of", {ENGLISH}),
    ("明月 猫", set()),  # every word must appear
    ("月明", set()),
    ("valued", set()),
])
def test_search_finds_words_inside_text_in_any_script(store, multilingual, query, found):
    assert {r["prompt"] for r in store.search(query)} == found


@pytest.mark.parametrize("query, found", [
    ('"', set()),
    ("*", set()),
    ("%", set()),
    ('"明月"', {"poem", "literal"}),
    ("NEAR(", {"literal"}),  # the word NEAR, not the operator
    ("-x", {"literal"}),  # x must appear, not 'anything but x'
    ("明月 OR 1", {"literal"}),  # OR is a word like any other: the poem has no 'or' and no '1'
    ("明月 NOT 猫", set()),
    ("_", {"literal"}),  # a LIKE wildcard taken literally
    ("prompt:明月", set()),
    ("明月*", {"poem", "literal"}),
])
def test_search_syntax_is_literal_text(store, sample_run, query, found):
    store.save_run(sample_run | {"prompt": "poem", "output": POEM})
    store.save_run(sample_run | {"prompt": "literal", "output": 'He said "明月" or 1 NEAR(x) -x snake_case a*b'})
    assert {r["prompt"] for r in store.search(query)} == found


def test_search_filters_limits_and_orders_in_both_paths(store, sample_run):
    ids = [store.save_run(sample_run | {"prompt": f"猫{i} 明月光" + " 明月光" * (i == 2), "model": "demo-zh" if i % 2 else "demo",
                                        "backend": "onnx" if i < 2 else "torch"}) for i in range(5)]
    store.save_run(sample_run | {"prompt": "unrelated"})
    # Short words (LIKE): newest first, limit and filters applied; called as the History tab calls it.
    assert [r["id"] for r in store.search("猫", 3, None, None)] == ids[:1:-1]
    assert [r["id"] for r in store.search("猫", 10, "demo-zh", None)] == [ids[3], ids[1]]
    assert [r["id"] for r in store.search("猫", 10, None, "onnx")] == [ids[1], ids[0]]
    # A word for the trigram index: newest first too (the History tab's order), limit and filters applied.
    assert [r["id"] for r in store.search("明月光", 3)] == [ids[4], ids[3], ids[2]]
    assert [r["id"] for r in store.search("明月光 猫", 10, "demo", "torch")] == [ids[4], ids[2]]
    assert "tokens" not in store.search("明月光")[0]  # the list columns only, like recent()


def test_first_schema_upgrade_makes_old_chinese_rows_searchable(tmp_path):
    db_path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE_V1, db_path)
    conn = sqlite3.connect(db_path)  # a row saved before the upgrade, indexed by the old unicode61 triggers
    conn.execute("INSERT INTO runs (created_at, prompt, output, status) VALUES ('2026-11-24T00:00:00.000+00:00', ?, '疑是地上霜', 'complete')",
                 [POEM])
    conn.commit()
    conn.close()
    store = HistoryStore(db_path)
    assert [r["id"] for r in store.search("明月")] == [4]
    assert [r["id"] for r in store.search("地上霜")] == [4]
    assert [r["id"] for r in store.search("template")] == [2]
    conn = sqlite3.connect(db_path)
    assert "trigram" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'runs_fts'").fetchone()[0]
    conn.close()
    new_id = store.save_run({"prompt": "举头望明月", "output": "", "status": "complete"})  # the new triggers index new rows
    assert {r["id"] for r in store.search("明月")} == {4, new_id}
    store.delete(4)
    assert [r["id"] for r in store.search("明月")] == [new_id]


def awkward_run(sample_run) -> dict:
    """Text that breaks naive CSV: newlines, commas, quotes, CJK, emoji, a lone surrogate, a long token list."""
    tokens = [{"token_id": i, "text": text, "bytes": list(text.encode("utf-8", "surrogatepass")), "prob": 0.5}
              for i, text in enumerate(["床", "前", "😀", "\ud800", ', "q"\n'] * 200)]
    return sample_run | {"prompt": 'p1, "quoted"\n第二行 😀 \ud800', "output": "床前明月光，\r\n疑是地上霜。",
                         "tokens": {"prompt": [], "output": tokens},
                         "settings": sample_run["settings"] | {"stop_sequences": ["。", "\ud800"]}}


def test_csv_export_opens_in_a_chinese_spreadsheet_and_round_trips(store, sample_run, tmp_path):
    run = awkward_run(sample_run)
    run_id = store.save_run(run)  # a lone surrogate in plain text is saved as U+FFFD, not a crash
    assert store.export(tmp_path / "runs.csv", "csv") == 1
    data = (tmp_path / "runs.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and not data[3:].startswith(b"\xef\xbb\xbf")  # one BOM: Excel reads UTF-8
    assert "床前明月光".encode() in data and "\\u5e8a".encode() not in data  # Chinese readable in every column
    with open(tmp_path / "runs.csv", newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and int(rows[0]["id"]) == run_id
    assert rows[0]["prompt"] == 'p1, "quoted"\n第二行 😀 \ufffd' and rows[0]["output"] == run["output"]
    # Cells a person reads, not JSON: the generated tokens with their probabilities; settings and metrics as name=value.
    output = run["tokens"]["output"]
    expected = " · ".join(f"{r['text'].replace(' ', '▁')} 50.0%" for r in output).replace("\ud800", "\ufffd")
    assert rows[0]["tokens"] == expected and "床 50.0% · 前 50.0% · 😀 50.0%" in expected
    assert len(rows[0]["tokens"]) < 32_767  # a spreadsheet cell holds it
    assert "stop_sequences=。 / \ufffd" in rows[0]["settings"].split("; ")  # the lone surrogate cannot be written as UTF-8
    assert not rows[0]["metrics"].startswith("{") and "ttft_ms=" in rows[0]["metrics"]


def test_jsonl_export_is_readable_utf8_and_exact(store, sample_run, tmp_path):
    run = awkward_run(sample_run)
    store.save_run(run)
    assert store.export(tmp_path / "runs.jsonl", "jsonl") == 1
    data = (tmp_path / "runs.jsonl").read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf") and "床前明月光".encode() in data
    (line,) = data.decode("utf-8").splitlines()
    row = json.loads(line)
    assert row["output"] == run["output"] and row["tokens"] == run["tokens"]
    assert row["tokens"]["output"][2]["bytes"] == [240, 159, 152, 128]


def test_command_line_prints_chinese(store, sample_run, capsys):
    run_id = store.save_run(sample_run | {"prompt": POEM})
    db = ["--db", str(store.path)]
    assert main([*db, "search", "明月"]) == 0 and POEM in capsys.readouterr().out
    assert main([*db, "show", str(run_id)]) == 0 and f'"prompt": "{POEM}"' in capsys.readouterr().out


@pytest.mark.parametrize("encoding", ["ascii", "gbk", "cp1252"])
def test_command_line_never_crashes_on_a_terminal_that_cannot_show_the_text(store, sample_run, monkeypatch, encoding):
    run_id = store.save_run(awkward_run(sample_run) | {"prompt": POEM + " 😀"})
    db = ["--db", str(store.path)]

    def cli(*args) -> tuple[int, str]:
        """main() writing to a terminal in `encoding`; returns what that terminal received, decoded strictly."""
        terminal = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict", write_through=True)
        monkeypatch.setattr(sys, "stdout", terminal)
        monkeypatch.setattr(sys, "stderr", terminal)
        try:
            code = main([*db, *args])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        return code, terminal.buffer.getvalue().decode(encoding)

    for command in (["list"], ["search", "明月"]):
        code, out = cli(*command)
        assert code == 0 and (POEM in out if encoding == "gbk" else "\\u5e8a\\u524d" in out)
    code, out = cli("show", str(run_id))
    assert code == 0 and json.loads(out)["prompt"] == POEM + " 😀"  # still valid JSON, whatever the terminal
    assert json.loads(out)["tokens"]["output"][3]["text"] == "\ud800"
    code, out = cli("列表")  # argparse's error repeats the bad command
    assert code == 2 and "invalid choice" in out


@pytest.mark.slow
def test_command_line_under_an_ascii_only_stdout(store):
    """The real thing: `PYTHONIOENCODING=ascii python -m playground.history`."""
    store.save_run({"prompt": POEM + " 😀", "output": "疑是地上霜", "status": "complete"})
    result = subprocess.run([sys.executable, "-m", "playground.history", "--db", str(store.path), "search", "明月"], cwd=ROOT,
                            env=os.environ | {"PYTHONIOENCODING": "ascii"}, capture_output=True, timeout=120)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
    assert "\\u5e8a\\u524d\\u660e\\u6708\\u5149 \\U0001f600" in result.stdout.decode("ascii")


@pytest.mark.parametrize("text", ['=HYPERLINK("http://evil.example","x")', "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_text(store, sample_run, tmp_path, text):
    store.save_run(sample_run | {"prompt": text, "output": text})
    store.export(tmp_path / "runs.csv", "csv")
    with open(tmp_path / "runs.csv", newline="", encoding="utf-8-sig") as handle:
        (row,) = csv.DictReader(handle)
    assert row["prompt"] == row["output"] == "'" + text  # shown as text; the apostrophe is hidden by the spreadsheet
    store.export(tmp_path / "runs.jsonl", "jsonl")
    assert json.loads((tmp_path / "runs.jsonl").read_text(encoding="utf-8"))["prompt"] == text  # JSONL stays exact


# ---- each person their own runs (issue 25) -------------------------------------------------------


def history_before(path: Path, migration: str, runs: list[dict] = (), jobs: list[dict] = ()) -> Path:
    """A history file at the schema before `migration`, holding `runs` and `jobs` (created then), as an older app left it."""
    created = {"created_at": "2026-12-01T00:00:00.000+00:00"}
    with closing(sqlite3.connect(path)) as conn:
        db = Database(conn)
        migrations.apply(db, stop_before=migration)
        for run in runs:
            db.table("runs").insert(created | {"status": "complete"} | run)
        for job in jobs:
            db.table("jobs").insert(created | job)
        conn.commit()
    return path


def test_runs_saved_before_owners_belong_to_the_local_user(tmp_path):
    """m009 gives runs, jobs and benchmark rows an owner; the rows already there are the local user's ("")."""
    store = HistoryStore(history_before(tmp_path / "h.db", "m009_owners", runs=[{"prompt": "旧的运行", "output": "old"}],
                                        jobs=[{"status": "complete", "name": "old"}]))
    assert store.get(1)["owner"] == "" and store.get(1, owner="") is not None and store.get(1, owner="alice") is None
    assert store.get_job(1)["owner"] == "" and store.latest_job(owner="alice") is None
    assert [r["id"] for r in store.search("旧的", owner="")] == [1] and store.search("旧的", owner="alice") == []


def test_each_owner_reads_exports_and_deletes_only_their_own_runs(store, sample_run, tmp_path):
    alice = [store.save_run(dict(sample_run, prompt=f"alice {i} 读书人", group_id="g-a", sample_index=i, owner="alice")) for i in range(2)]
    bob = store.save_run(dict(sample_run, prompt="bob 读书人", owner="bob", model="other-model"))
    local = store.save_run(dict(sample_run, prompt="local 读书人"))  # no owner given: the local user's

    # Everyone's (owner=None: the local user of an app without a login, an admin, the command line).
    assert {r["id"] for r in store.recent()} == {*alice, bob, local}
    assert store.get(local)["owner"] == "" and store.get(bob)["owner"] == "bob"
    # One user's: lists, searches (long and short words, groups), opens, counts, filters, revisions.
    assert [r["id"] for r in store.recent(owner="alice")] == alice[::-1]
    assert {r["id"] for r in store.search("读书人", owner="alice")} == set(alice)
    assert {r["id"] for r in store.search("bob", owner="alice")} == set()
    assert [r["id"] for r in store.search("书", owner="bob")] == [bob]  # a word too short for the trigram index
    assert [r["id"] for r in store.search("group:g-a", owner="bob")] == [] and store.group_ids("g-a", owner="alice") == alice
    assert store.get(bob, owner="alice") is None and store.get(bob, owner="bob")["id"] == bob
    assert store.count(owner="alice") == 2 and store.count() == 4
    assert store.distinct("model", owner="alice") == [sample_run["model"]] and "other-model" in store.distinct("model")
    before = store.revision(owner="alice")
    store.save_run(dict(sample_run, owner="bob"))
    assert store.revision(owner="alice") == before  # another user's run does not make alice's view stale
    # Exports: all of one's own, or the ids asked for among one's own.
    assert store.export(tmp_path / "a.jsonl", "jsonl", owner="alice") == 2
    assert store.export(tmp_path / "b.jsonl", "jsonl", [bob, *alice], owner="bob") == 1
    assert json.loads((tmp_path / "b.jsonl").read_text(encoding="utf-8"))["owner"] == "bob"
    # Deleting: another's run is as absent as one that never was; one's own goes.
    assert not store.delete(bob, owner="alice") and store.get(bob) is not None
    assert store.delete(alice[0], owner="alice") and store.get(alice[0]) is None


def test_jobs_and_benchmarks_carry_their_owner(store):
    first = store.create_job("alices-model", "demo-gpt2", {}, owner="alice")
    store.create_job("bobs-model", "demo-gpt2", {}, owner="bob")
    assert store.latest_job(owner="alice")["id"] == first and store.latest_job()["name"] == "bobs-model"
    assert store.get_job(first, owner="bob") is None
    session = store.save_bench([{"backend": "torch", "variant": "fp32", "provider": "cpu", "decode_tokens_per_s": 1.0}], "demo",
                               {}, owner="alice")
    with closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("SELECT owner FROM bench WHERE session = ?", [session]).fetchall() == [("alice",)]


def test_the_command_line_narrows_to_one_owner(store, sample_run, capsys):
    mine = store.save_run(dict(sample_run, prompt="mine", owner="alice"))
    store.save_run(dict(sample_run, prompt="theirs", owner="bob"))
    assert main(["--db", str(store.path), "--owner", "alice", "list"]) == 0
    out = capsys.readouterr().out
    assert "mine" in out and "@alice" in out and "theirs" not in out
    assert main(["--db", str(store.path), "--owner", "bob", "show", str(mine)]) == 1


def test_a_word_split_between_prompt_and_output_is_found_and_shown_where(store, sample_run):
    """The run's text reads prompt then output: `读书人` is found in a run whose prompt ends 读书 and whose output begins
    人不是; the match says where it is, cut between characters."""
    across = store.save_run(dict(sample_run, prompt="🇨🇳 他说：读书", output="人不是只为了考试。"))
    in_output = store.save_run(dict(sample_run, prompt="Once", output=" upon a time the value of x"))
    assert [r["id"] for r in store.search("读书人")] == [across]
    assert [r["id"] for r in store.search("书人")] == [across]  # a word too short for the trigram index, across too
    (row,) = store.search("读书人")
    assert row["match"] == {"where": "both", "before": "🇨🇳 他说：", "match": "读书人", "after": "不是只为了考试。"}
    (row,) = store.search("VALUE")
    assert row["id"] == in_output and row["match"]["where"] == "output" and row["match"]["match"] == "value"
    assert store.search("读书人")[0]["match"] == match_snippet("🇨🇳 他说：读书", "人不是只为了考试。", ["读书人"])
    long = match_snippet("前" * 40 + "🇨🇳", "明月" + "光" * 40, ["明月"], context=5)
    assert long == {"where": "output", "before": "…前前前前🇨🇳", "match": "明月", "after": "光光光光光…"}  # a flag is one character
    store.delete(across)
    assert store.search("读书人") == []  # the index forgets a deleted run


def test_the_search_index_moves_to_the_whole_text_without_losing_old_rows(tmp_path):
    store = HistoryStore(history_before(tmp_path / "h.db", "m010_search_whole_text", runs=[{"prompt": "床前明", "output": "月光"}]))
    assert [r["id"] for r in store.search("明月光")] == [1]
    store.delete(1)
    assert store.search("明月光") == [] and store.count() == 0


def test_the_history_table_shows_where_a_search_found_each_run_escaped(store, sample_run):
    from playground.ui.history_tab import table_html

    store.save_run(dict(sample_run, prompt="<b>读书", output="人</b>不是"))
    html = table_html(store.search("读书人"), "zh-CN")
    assert "<th data-col=\"8\">匹配位置</th>" in html
    assert '<span class="match-where">提示词 → 输出</span> &lt;b&gt;<mark>读书人</mark>&lt;/b&gt;不是' in html
    assert "<mark>" not in table_html(store.recent(), "en")  # no search, no column


# ---- token records packed (m011) -------------------------------------------------------------------


def test_token_records_move_to_packed_arrays_exactly(tmp_path, sample_run):
    """Rows saved before m011 held their records as JSON text: the migration packs them, and every field of every record
    comes back equal (floats to the bit, lone surrogates, records without `bytes` from before they had them, fields
    the array layout does not know), in `get`, in both exports."""
    odd = {"prompt": [{"token_id": 1, "text": "\ud800", "future_field": [1, 2]}], "output": []}  # not the array layout
    old = {"prompt": [dict(r) for r in sample_run["tokens"]["prompt"]],
           "output": [dict(r, raw_prob=0.1 + 1e-17 * i, prob=1 / 3) for i, r in enumerate(sample_run["tokens"]["output"])]}
    for record in old["output"][:2]:
        record.pop("bytes")  # saved before records had bytes
        record["text"] = "床\ud800" if record is old["output"][0] else record["text"]
    path = history_before(tmp_path / "h.db", "m011_packed_tokens",
                          runs=[{"prompt": "p", "tokens": None if t is None else json.dumps(t)} for t in (sample_run["tokens"], old, odd, None)])
    store = HistoryStore(path)
    expected = [json.loads(json.dumps(t)) for t in (sample_run["tokens"], old, odd)] + [None]
    assert [store.get(i)["tokens"] for i in (1, 2, 3, 4)] == expected
    with closing(sqlite3.connect(path)) as conn:
        stored = conn.execute("SELECT tokens, substr(tokens_packed, 1, 4) FROM runs ORDER BY id").fetchall()
    assert stored == [(None, b"PGT1"), (None, b"PGJ1"), (None, b"PGJ1"), (None, None)]  # `old` lacks bytes: kept as JSON
    store.export(tmp_path / "all.jsonl", "jsonl")
    lines = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [line["tokens"] for line in lines] == expected and "tokens_packed" not in lines[0]
    store.export(tmp_path / "all.csv", "csv")
    with open(tmp_path / "all.csv", newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    assert "tokens_packed" not in rows[0] and rows[0]["tokens"].count("·") == len(sample_run["tokens"]["output"]) - 1


def test_a_long_run_with_alternatives_is_stored_in_under_15_kb(tiny_model_dir, tmp_path):
    """Issue 25's bar: a 128-token run with 10 alternatives per token at most 15 kB (about 160 kB as JSON). On the tiny
    model's tokenizer with a longer context and random weights: flat distributions, the hardest to compress."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from playground.backends.torch import TorchBackend
    from playground.models import resolve_model
    from playground.token_pack import pack_tokens

    folder = tmp_path / "long-context"
    shutil.copytree(tiny_model_dir, folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config.from_pretrained(folder, n_positions=256)).save_pretrained(folder, safe_serialization=True)
    source = resolve_model(str(folder))
    result = generate(TorchBackend(source, device="cpu"), source, "The value of",
                      GenerationSettings(max_new_tokens=128, seed=3, top_alternatives=10))
    row = saved_row(result, "complete")
    packed = pack_tokens(row["tokens"])
    assert len(result.tokens) == 128 and packed[:4] == b"PGT1", packed[:4]
    assert len(packed) <= 15_000 and len(json.dumps(row["tokens"])) > 100_000, (len(packed), len(json.dumps(row["tokens"])))
    store = HistoryStore(tmp_path / "h.db")
    assert store.get(store.save_run(row))["tokens"] == json.loads(json.dumps(row["tokens"]))
