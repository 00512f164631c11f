"""Backup of a running SQLite store, as service/README.md ('Upgrades, backup and restore') says to take it: the
sqlite3 online backup while a writer keeps storing events restores to a store that opens clean and holds every event
committed before the backup began; a plain copy of seawatch.db alone (what `cp` / `rsync` of the file gives) lacks
the transactions still in the WAL, which is why the README warns against it."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

from seawatch.service.store import EventQuery, EventStore
from test_service_store import make_event

README = Path(__file__).resolve().parents[1] / "service" / "README.md"


def test_online_backup_of_a_running_store_restores_clean(tmp_path):
    live = tmp_path / "live" / "seawatch.db"
    store = EventStore.open(f"sqlite:///{live}")
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        i = 0
        while not stop.is_set():
            store.put(make_event(i))
            i += 1
            written[0] = i

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        while written[0] < 300:
            time.sleep(0.01)
        assert (tmp_path / "live" / "seawatch.db-wal").stat().st_size > 0  # committed rows wait in the WAL
        before = written[0]
        plain = tmp_path / "plain.db"
        shutil.copyfile(live, plain)  # what a naive file copy takes
        backup = tmp_path / "backup" / "seawatch.db"
        backup.parent.mkdir()
        # the README's command without the sqlite3 tool
        dst = sqlite3.connect(backup)
        sqlite3.connect(live).backup(dst)
        dst.close()
        while written[0] < before + 100:  # the service goes on meanwhile
            time.sleep(0.01)
    finally:
        stop.set()
        t.join(10)
        store.close()
    with sqlite3.connect(backup) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    restored = EventStore.open(f"sqlite:///{backup}")
    try:
        n = restored.count()
        assert before <= n < written[0]
        assert all(restored.get(f"ev{i:05d}") is not None for i in (0, before // 2, before - 1))
        assert restored.search(EventQuery(limit=5)).events
        assert restored.put(make_event(written[0] + 1))  # and takes new writes
    finally:
        restored.close()
    with sqlite3.connect(plain) as c:  # the plain copy lacks the WAL's transactions
        assert c.execute("SELECT count(*) FROM events").fetchone()[0] < before


def test_readme_documents_backup_restore_and_rollback():
    text = README.read_text()
    for needle in ('.backup', "pg_dump", "seawatch.db-wal", "one way", "back up before upgrading",
                   "systemd", "path prefix", "availability_topic"):
        assert needle in text, needle
