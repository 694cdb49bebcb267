"""Evaluation: declared protocols, ranking metrics, baselines in the same harness, reports."""
