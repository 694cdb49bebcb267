"""The serving benchmark's batched bare baseline gathers concurrent requests as @serve.batch does."""

import asyncio

import pytest

from benchmarks.bare_server import MicroBatcher


def test_concurrent_jobs_share_batches_of_at_most_the_size_and_errors_reach_every_waiter():
    batches = []

    def run(jobs):
        if "bad" in jobs:
            raise ValueError("broken batch")
        batches.append(list(jobs))

    async def scenario():
        batcher = MicroBatcher(run, size=4, wait_s=0.01)
        done = await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        assert done == list(range(6))
        assert batches == [[0, 1, 2, 3], [4, 5]]  # full batch at once, the rest after the wait
        alone = await batcher.submit(9)
        assert alone == 9 and batches[-1] == [9]
        results = await asyncio.gather(batcher.submit("bad"), batcher.submit(7), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)

    asyncio.run(scenario())


def test_a_lone_job_waits_at_most_the_timeout():
    async def scenario():
        batcher = MicroBatcher(lambda jobs: None, size=16, wait_s=0.05)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit("x")
        return loop.time() - started

    assert asyncio.run(scenario()) == pytest.approx(0.05, abs=0.04)


def test_profile_samples_go_to_the_innermost_named_part_of_the_request_path(tmp_path):
    from benchmarks.serving import stack_shares

    app = "run (ray/serve/_private/replica.py:10);GuardMiddleware.__call__ (serving/http.py:127);"
    raw = tmp_path / "p.raw.txt"
    raw.write_text(
        app + "RecommenderDeployment.recommend (serving/recommender.py:240);OnlineEngine.run_recommend (recsys/online/engine.py:200);"
        "Retriever.user_vectors (recsys/online/retrieve.py:60);forward (torch/nn/x.py:1) 6\n"
        + app + "Router.__call__ (starlette/routing.py:5) 2\n"
        "Thread.run (threading.py:982);AsyncioRouter.assign_request (ray/serve/_private/router.py:1) 10\n"
        + app + "SearchIndex.rank (engine.py:240);SearchIndex.lexical_scores (engine.py:170) 2\n"
        "not a sample line\n"
    )
    got = stack_shares(raw, rate_hz=100.0, requests_done=2)
    assert got["samples"] == 20 and got["request_path_share"] == 0.5  # the router thread is outside the request's path
    assert got["request_path"] == {"user_encode": 0.6, "app_other": 0.2, "lexical_bm25": 0.2}
    assert got["request_path_ms_per_request"] == 50.0 and got["ms_per_request"]["user_encode"] == 30.0
