"""Users' real-time events: the memory store's durability and the Redis store against a real server."""

import socket

import pytest

from recsys.config import EventStoreConfig
from recsys.online.events import MemoryEventStore, RedisEventStore


def test_memory_store_keeps_recent_events_in_order(tmp_path):
    store = MemoryEventStore(tmp_path, EventStoreConfig(max_events_per_user=3))
    for i in range(5):
        store.record("u", i, "click", 1000 + i)
    assert store.recent("u") == [(2, "click", 1002), (3, "click", 1003), (4, "click", 1004)]
    assert store.recent("nobody") == []


def test_a_restart_loses_no_acknowledged_event(tmp_path):
    """Kill without close (the log is written before each ack), across a snapshot boundary."""
    cfg = EventStoreConfig(snapshot_every=4)
    store = MemoryEventStore(tmp_path, cfg)
    for i in range(10):
        store.record(f"u{i % 3}", i + 1, "purchase" if i % 2 else "view", i)
    expected = {u: store.recent(u) for u in ("u0", "u1", "u2")}
    del store  # no close(), no final snapshot: a crash
    reopened = MemoryEventStore(tmp_path, cfg)
    assert {u: reopened.recent(u) for u in expected} == expected
    assert (tmp_path / "snapshot.json").is_file()
    assert len((tmp_path / "events.log").read_text().splitlines()) == 10 % 4  # compacted up to the last snapshot


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path):
    store = MemoryEventStore(tmp_path, EventStoreConfig())
    store.record("u", 1, "click", 5)
    store.close()
    with open(tmp_path / "events.log", "a") as f:
        f.write('["u", 2, "cli')  # a crash mid-write: never acknowledged
    assert MemoryEventStore(tmp_path, EventStoreConfig()).recent("u") == [(1, "click", 5)]


def test_redis_store_against_a_real_server(redis_url):
    cfg = EventStoreConfig(backend="redis", redis_url=redis_url, max_events_per_user=2)
    import redis

    redis.Redis.from_url(redis_url).delete(RedisEventStore.PREFIX + "u")
    a, b = RedisEventStore(cfg), RedisEventStore(cfg)  # two replicas share one state
    assert a.record("u", 7, "click", 1) == 1
    assert b.record("u", 8, "purchase", 2) == 2
    assert b.record("u", 9, "view", 3) == 2  # trimmed to the newest max_events_per_user
    assert a.recent("u") == [(8, "purchase", 2), (9, "view", 3)]


def test_unreachable_redis_names_the_setting():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match="serve.events.redis_url"):
        RedisEventStore(EventStoreConfig(backend="redis", redis_url=f"redis://127.0.0.1:{port}/0"))
