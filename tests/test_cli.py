"""The ``tansuo`` command line, run as a real subprocess (the installed console script)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tansuo.data.formats import FORMATS, ReadOptions, read_chunks

TANSUO = [sys.executable, "-m", "tansuo.cli"]


def run(home: Path, *args: str, check: bool = True, env: dict | None = None
        ) -> subprocess.CompletedProcess[str]:
    # wide terminal: rich must not wrap the messages tests look for
    full_env = {**os.environ, "TANSUO_HOME": str(home), "COLUMNS": "200", **(env or {})}
    full_env.pop("TANSUO_DATABASE_URL", None)
    proc = subprocess.run([*TANSUO, *args], capture_output=True, text=True, env=full_env,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"tansuo {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


GOOD = "user_id,item_id,type,timestamp\nu1,i1,view,2026-01-01T00:00:00Z\n" \
       "u1,i2,purchase,2026-01-01T00:05:00Z\nu2,i1,click,2026-01-02T00:00:00Z\n"


def test_import_json_report_then_stats(tmp_path, write):
    src = write("events.csv", GOOD + "u3,i1,teleport,2026-01-01T00:00:00Z\n")
    proc = run(tmp_path / "home", "import", "events", str(src), "--json")
    report = json.loads(proc.stdout)  # exactly one JSON document on stdout
    assert report["accepted"] == 3 and report["rejected"] == 1
    assert report["first_rejected"][0]["line"] == 5
    assert report["first_rejected"][0]["reason"] == "unknown_type"
    stats = json.loads(run(tmp_path / "home", "stats", "--json").stdout)
    assert stats["users"] == 2 and stats["events"] == 3
    assert stats["events_by_type"] == {"click": 1, "purchase": 1, "view": 1}
    assert stats["events_by_day"] == {"2026-01-01": 2, "2026-01-02": 1}
    assert stats["quarantined_by_reason"] == {"unknown_type": 1}
    again = json.loads(run(tmp_path / "home", "import", "events", str(src), "--json").stdout)
    assert again["accepted"] == 0 and again["duplicates"] == 3


def test_table_output_and_report_file(tmp_path, write):
    src = write("events.csv", GOOD)
    proc = run(tmp_path / "home", "import", "events", str(src), "--report",
               str(tmp_path / "r.json"))
    assert "accepted (new)" in proc.stdout
    assert json.loads((tmp_path / "r.json").read_text())["accepted"] == 3
    q = run(tmp_path / "home", "quarantine", "--json")
    assert json.loads(q.stdout) == []


def test_column_and_type_mapping_options(tmp_path, write):
    src = write("custom.csv", "customer;sku;action;when\nc1;s1;pageview;1767225600\n")
    proc = run(tmp_path / "home", "import", "events", str(src), "--map", "user_id=customer",
               "--map", "item_id=sku", "--map", "type=action", "--map", "timestamp=when",
               "--type-map", "pageview=view", "--timestamp-unit", "s", "--json")
    assert json.loads(proc.stdout)["accepted"] == 1


def test_exit_codes(tmp_path, write):
    missing = run(tmp_path / "home", "import", "events", str(tmp_path / "nope.csv"), check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad = write("bad.csv", "user_id,item_id,type,timestamp\n,i1,view,x\nu1,,view,y\n")
    proc = run(tmp_path / "home", "import", "events", str(bad), check=False)
    assert proc.returncode == 1
    assert "nothing could be imported" in proc.stderr and "missing_user_id" in proc.stderr
    no_col = write("nocol.csv", "who,what\nu,i\n")
    proc = run(tmp_path / "home", "import", "events", str(no_col), check=False)
    assert proc.returncode == 2 and "--map user_id=COLUMN" in proc.stderr
    proc = run(tmp_path / "home", "import", "events", str(no_col), "--map", "oops", check=False)
    assert proc.returncode == 2 and "expected FIELD=VALUE" in proc.stderr
    proc = run(tmp_path / "home", "datasets", "info", "imaginary", check=False)
    assert proc.returncode == 2 and "movielens-small" in proc.stderr
    proc = run(tmp_path / "home", "import", "events", str(no_col), "--unknown-items", "maybe",
               check=False)
    assert proc.returncode == 2 and "unknown_items" in proc.stderr


def test_items_import_and_unknown_item_drop(tmp_path, write):
    items = write("items.csv", "item_id,title,category,price\ni1,Shoe,Sports > Running,50\n")
    assert json.loads(run(tmp_path / "h", "import", "items", str(items), "--json").stdout)[
        "accepted"] == 1
    src = write("events.csv", GOOD)
    rep = json.loads(run(tmp_path / "h", "import", "events", str(src), "--unknown-items", "drop",
                         "--json").stdout)
    assert rep["accepted"] == 2 and rep["rejected_by_reason"] == {"unknown_item": 1}


def test_datasets_list_and_info(tmp_path):
    names = {d["name"] for d in json.loads(run(tmp_path, "datasets", "list", "--json").stdout)}
    assert names == {"movielens-small", "obd", "synthetic-shop"}
    info = json.loads(run(tmp_path, "datasets", "info", "obd", "--json").stdout)
    assert info["shape"]["rounds_per_log"] == 10_000


def _big_csv(path: Path, n: int) -> None:
    lines = ["user_id,item_id,type,timestamp"]
    lines += [f"u{i % 500},i{i % 997},view,{1767225600000 + i * 1000}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def _writer_processes(db: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"tansuo.data.sqlite_writer" in args and str(db).encode() in args:
            found.append(cmdline.parent.name)
    return found


@pytest.mark.slow
def test_sigkill_mid_import_leaves_whole_chunks_and_rerun_completes(tmp_path):
    src = tmp_path / "big.csv"
    n = 200_000
    _big_csv(src, n)
    home = tmp_path / "home"
    env = {**os.environ, "TANSUO_HOME": str(home), "TANSUO_CHUNK_SIZE": "2000"}
    proc = subprocess.Popen([*TANSUO, "import", "events", str(src), "--bot-max-per-minute", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = home / "tansuo.db"
    stored = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    stored = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 20_000:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "import finished before it could be killed; make the file larger"
    linux = sys.platform.startswith("linux")
    assert not linux or _writer_processes(db), "a bulk SQLite import writes from a child process"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if linux:  # its SQLite writer process dies with it
        deadline = time.time() + 10
        while _writer_processes(db) and time.time() < deadline:
            time.sleep(0.05)
        assert not _writer_processes(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        after_kill = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    # Whole chunks only: the count is a prefix of the reader's chunk boundaries.
    sizes = [len(c.frame) for c in read_chunks(src, FORMATS["csv"], "events",
                                               ReadOptions(chunk_size=2000))]
    boundaries = {sum(sizes[:k]) for k in range(len(sizes) + 1)}
    assert 0 < after_kill < n and after_kill in boundaries
    rerun = subprocess.run([*TANSUO, "import", "events", str(src), "--bot-max-per-minute", "0",
                            "--json"], env=env, capture_output=True, text=True, timeout=300)
    report = json.loads(rerun.stdout)
    assert report["accepted"] == n - after_kill and report["duplicates"] == after_kill
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == n
        statuses = [r[0] for r in conn.execute("SELECT status FROM imports ORDER BY import_id")]
    assert statuses == ["running", "done"]  # the killed import is visible as never finished
