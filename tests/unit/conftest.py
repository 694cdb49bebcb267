import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    """Unit tests never start Ray (as Serve's own unit tests refuse to)."""
    import ray

    def refuse(*_, **__):
        raise AssertionError("unit tests must not start Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", refuse)
