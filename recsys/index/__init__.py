"""ANN index over the trained model's item vectors: build, version, recall checks (no HTTP)."""

from recsys.artifacts import IndexRelease
from recsys.index.ann import ItemIndex, exact_top_k, recall_at_k
from recsys.index.build import IndexBuildError, build_index, latest_index

__all__ = ["IndexBuildError", "IndexRelease", "ItemIndex", "build_index", "exact_top_k", "latest_index", "recall_at_k"]
