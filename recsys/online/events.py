"""Users' real-time events: what POST /events records and the next /recommend reads.

Two backends with one interface:
- `MemoryEventStore`: a dict in one process, made durable by an append-only log written before
  each event is acknowledged, and compacted into a snapshot every `snapshot_every` events. A
  restart loads the snapshot and replays the log, so no acknowledged event is lost.
- `RedisEventStore`: one Redis list per user (RPUSH + LTRIM in one transaction); durability is
  the Redis server's (AOF/RDB), and every Serve replica reads the same state.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from pathlib import Path
from typing import Protocol

from recsys.config import EventStoreConfig

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")


class EventStore(Protocol):
    def record(self, user_id: str, item_index: int, event: str, timestamp_ms: int) -> int: ...

    def recent(self, user_id: str) -> list[tuple[int, str, int]]: ...


class MemoryEventStore:
    """Recent events per user, oldest first, at most `max_events_per_user` each."""

    SNAPSHOT = "snapshot.json"
    LOG = "events.log"

    def __init__(self, folder: str | Path, cfg: EventStoreConfig):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.users: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._since_snapshot = 0
        self._load()
        self._log = open(self.folder / self.LOG, "a", encoding="utf-8")  # noqa: SIM115 - held open for appends

    def _remember(self, user_id: str, item_index: int, event: str, timestamp_ms: int) -> int:
        events = self.users.setdefault(user_id, deque(maxlen=self.cfg.max_events_per_user))
        events.append((item_index, event, timestamp_ms))
        return len(events)

    def _load(self) -> None:
        snapshot = self.folder / self.SNAPSHOT
        if snapshot.is_file():
            for user_id, events in json.loads(snapshot.read_text()).items():
                for item_index, event, ts in events:
                    self._remember(user_id, item_index, event, ts)
        log = self.folder / self.LOG
        if log.is_file():
            for line in log.read_text(encoding="utf-8").splitlines():
                try:
                    user_id, item_index, event, ts = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash mid-write was never acknowledged
                self._remember(user_id, item_index, event, ts)

    def record(self, user_id: str, item_index: int, event: str, timestamp_ms: int) -> int:
        """Append durably, then apply; returns the user's number of recent events."""
        with self._lock:
            self._log.write(json.dumps([user_id, item_index, event, timestamp_ms]) + "\n")
            self._log.flush()
            if self.cfg.fsync:
                os.fsync(self._log.fileno())
            count = self._remember(user_id, item_index, event, timestamp_ms)
            self._since_snapshot += 1
            if self._since_snapshot >= self.cfg.snapshot_every:
                self.snapshot()
            return count

    def snapshot(self) -> None:
        """Write every user's events to a new snapshot atomically, then start an empty log."""
        tmp = self.folder / f".{self.SNAPSHOT}.tmp"
        tmp.write_text(json.dumps({u: list(e) for u, e in self.users.items()}))
        os.replace(tmp, self.folder / self.SNAPSHOT)
        self._log.close()
        self._log = open(self.folder / self.LOG, "w", encoding="utf-8")  # noqa: SIM115
        self._since_snapshot = 0

    def recent(self, user_id: str) -> list[tuple[int, str, int]]:
        events = self.users.get(user_id)
        return list(events) if events else []

    def close(self) -> None:
        self._log.close()


class RedisEventStore:
    PREFIX = "recsys:events:"

    def __init__(self, cfg: EventStoreConfig):
        import redis

        self.cfg = cfg
        self.client = redis.Redis.from_url(cfg.redis_url, socket_timeout=2.0)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise ConnectionError(
                f"serve.events.redis_url {cfg.redis_url} is not reachable ({exc}); start Redis or set serve.events.backend: memory"
            ) from None

    def record(self, user_id: str, item_index: int, event: str, timestamp_ms: int) -> int:
        key = self.PREFIX + user_id
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(key, json.dumps([item_index, event, timestamp_ms]))
        pipe.ltrim(key, -self.cfg.max_events_per_user, -1)
        pipe.llen(key)
        return int(pipe.execute()[-1])

    def recent(self, user_id: str) -> list[tuple[int, str, int]]:
        return [tuple(json.loads(x)) for x in self.client.lrange(self.PREFIX + user_id, 0, -1)]

    def close(self) -> None:
        self.client.close()


def open_event_store(cfg: EventStoreConfig, default_folder: Path) -> EventStore:
    if cfg.backend == "redis":
        return RedisEventStore(cfg)
    return MemoryEventStore(Path(cfg.path) if cfg.path else default_folder, cfg)
