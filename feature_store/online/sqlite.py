"""SQLite backend: Feast's table layout, read directly.

Table ``<project>_<feast_view>`` with one row per (entity_key, feature_name):
``value`` is a serialized Value, ``event_ts`` the event time. Different versions are different
tables, so materializing one never locks the rows another is served from; the database runs in
WAL mode (set when the store is applied) so readers never wait for a writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from feature_store.online.base import FeatureNotOnline, OnlineReader
from feature_store.online.valueproto import serialize_string_entity_key
from feature_store.versions import FeatureField, FeatureVersion


class SqliteOnlineReader(OnlineReader):
    store_name = "sqlite"

    def __init__(self, path: Path, project: str) -> None:
        super().__init__(project)
        self.path = Path(path)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        # sqlite3 connections are not shareable across threads; one read-only connection per thread.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if not self.path.exists():
                raise FeatureNotOnline(f"SQLite online store {self.path} does not exist; run 'recsys features apply'")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
            self._local.conn = conn
        return conn

    def fetch_raw(
        self, version: FeatureVersion, features: Sequence[FeatureField], entity_ids: Sequence[str]
    ) -> list[list[bytes | None] | None]:
        table = f"{self.project}_{version.feast_name}"
        keys = [serialize_string_entity_key(version.join_key, e) for e in entity_ids]
        pos = {f.name: j for j, f in enumerate(features)}
        out: dict[bytes, list[bytes | None]] = {}
        sql = (
            f'SELECT entity_key, feature_name, value, event_ts FROM "{table}" '
            f"WHERE entity_key IN ({','.join('?' * len(keys))})"
        )
        try:
            rows = self._conn().execute(sql, keys).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise FeatureNotOnline(f"{version.ref} is not materialized in the SQLite online store") from exc
            raise
        width = len(features) + 1
        for ek, name, value, ts in rows:
            j = pos.get(name)
            if j is None:
                continue
            slot = out.get(ek)
            if slot is None:
                slot = out[ek] = [None] * width
            slot[j] = value
            slot[-1] = ts
        return [out.get(k) for k in keys]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
