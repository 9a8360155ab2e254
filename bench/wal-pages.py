#!/usr/bin/env python3
"""Which b-trees the frames of a SQLite WAL belong to.

    python3 bench/wal-pages.py <database> [writes]

Reads the frame headers of <database>-wal and names each frame's page with
SQLite's `dbstat` (on a copy of the database and its WAL, so the pages the
WAL added are named too). With `writes`, also per write. Used for "What a
REST write writes" in docs/performance.md: a copy of the benchmark's
database, the server started with `EARNTRACK_SQLITE_CHECKPOINT_MS=60000` so
that the WAL keeps every frame, a `unicast --via earnings` run, then the
server killed (a clean stop would empty the WAL).
"""
import collections
import shutil
import sqlite3
import struct
import sys
import tempfile
from pathlib import Path

db = Path(sys.argv[1])
writes = int(sys.argv[2]) if len(sys.argv) > 2 else None
wal = Path(f"{db}-wal")

with tempfile.TemporaryDirectory() as tmp:
    copy = Path(tmp) / "copy.db"
    shutil.copy(db, copy)
    shutil.copy(wal, f"{copy}-wal")
    owner = dict((page, name) for name, page in
                 sqlite3.connect(copy).execute("SELECT name, pageno FROM dbstat"))

counts = collections.Counter()
frames = commits = 0
with open(wal, "rb") as f:
    page_size = struct.unpack(">I", f.read(32)[8:12])[0]
    while len(header := f.read(24)) == 24:
        page, commit_size = struct.unpack(">II", header[:8])
        f.seek(page_size, 1)
        frames += 1
        commits += commit_size != 0
        counts[owner.get(page, "unknown")] += 1

print(f"{frames} frames of {page_size} bytes, {commits} commits")
for name, n in counts.most_common():
    per = f"  {n / writes:.2f} per write" if writes else ""
    print(f"{name:40} {n:8}{per}")
