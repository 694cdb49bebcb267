"""Closed-loop HTTP load: N clients, each sending its next request when the last one answered.

Run as its own process so the load does not share an interpreter with the server:

    python -m benchmarks.loadgen --url http://127.0.0.1:8000/recommend --bodies bodies.json \
        --concurrency 16 --seconds 10

Prints one JSON object: p50_ms, p99_ms, qps, errors (non-2xx answers or failed connections),
requests and statuses (a count per status code). `--retry` sends a request once more after a
connection error or a 502/503/504 (the usual retry set of HTTP clients), as a real client does (then also: retried, failed_after_retry, the
longest gap between two 2xx answers, and 2xx answers per second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter

import aiohttp
import numpy as np

RETRYABLE = (502, 503, 504)  # besides connection errors: the gateway lost its backend, overload, no replica ready
RETRY_BACKOFF_S = (0.05, 0.15)  # uniform jitter before the one retry


async def _send(session, url, body):
    try:
        async with session.post(url, data=body, headers={"content-type": "application/json"}) as answer:
            await answer.read()
            return answer.status
    except (TimeoutError, aiohttp.ClientError) as exc:
        return type(exc).__name__


async def _client(session, url, bodies, offset, stop_at, latencies, statuses, retry=False, retried=None, ok_times=None) -> None:
    i = offset
    while time.perf_counter() < stop_at:
        body = bodies[i % len(bodies)]
        i += 1
        started = time.perf_counter()
        status = await _send(session, url, body)
        if retry and (not isinstance(status, int) or status in RETRYABLE):
            retried[status] += 1
            await asyncio.sleep(random.uniform(*RETRY_BACKOFF_S))
            status = await _send(session, url, body)
        latencies.append(time.perf_counter() - started)
        statuses[status] += 1
        if ok_times is not None and isinstance(status, int) and 200 <= status < 300:
            ok_times.append(time.perf_counter())


async def run_load(url: str, bodies: list[bytes], concurrency: int, seconds: float, warmup_s: float = 1.0, retry: bool = False) -> dict:
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if warmup_s > 0:
            await asyncio.gather(*(_client(session, url, bodies, c, time.perf_counter() + warmup_s, [], Counter()) for c in range(concurrency)))
        latencies: list[float] = []
        statuses: Counter = Counter()
        retried: Counter = Counter()
        ok_times: list[float] = []
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(_client(session, url, bodies, c * 7919, stop_at, latencies, statuses, retry, retried, ok_times)
                               for c in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    ok = sum(n for s, n in statuses.items() if isinstance(s, int) and 200 <= s < 300)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        "qps": round(ok / elapsed, 1),
        "errors": len(latencies) - ok,
        "statuses": {str(s): n for s, n in sorted(statuses.items(), key=str)},
        **(_retry_report(retried, len(latencies) - ok, ok_times, started, elapsed) if retry else {}),
    }


def _retry_report(retried: Counter, failed: int, ok_times: list[float], started: float, elapsed: float) -> dict:
    times = np.sort(np.asarray([started, *ok_times, started + elapsed]))
    per_second = np.bincount(((times[1:-1] - started)).astype(int), minlength=int(np.ceil(elapsed)))
    return {
        "retried": sum(retried.values()),
        "retried_on": {str(s): n for s, n in sorted(retried.items(), key=str)},
        "failed_after_retry": failed,
        "longest_gap_without_2xx_s": round(float(np.diff(times).max()), 3),
        "ok_per_second": per_second.tolist(),
    }


def load_levels(url: str, bodies_file, seconds: float, levels=(1, 16, 64), cwd=None) -> dict:
    """One closed-loop run per concurrency level, each from a fresh load-generator process."""
    import subprocess

    out = {}
    for c in levels:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.loadgen", "--url", url, "--bodies", str(bodies_file), "--concurrency", str(c), "--seconds", str(seconds)],
            cwd=cwd, capture_output=True, text=True, check=True,
        )
        out[f"c{c}"] = json.loads(done.stdout)
        print(f"  c{c}: {out[f'c{c}']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="closed-loop HTTP POST load")
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="a JSON file holding a list of request bodies")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--retry", action="store_true", help="retry once after a connection error or a 502, 503 or 504")
    args = parser.parse_args(argv)
    bodies = [json.dumps(b).encode() for b in json.loads(open(args.bodies).read())]
    if not bodies:
        parser.error("--bodies holds no requests")
    print(json.dumps(asyncio.run(run_load(args.url, bodies, args.concurrency, args.seconds, args.warmup_s, args.retry))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
