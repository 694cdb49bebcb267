"""Ray job: the index stage (the fine-tuned model's item vectors → a versioned FAISS index).

    ray job submit --working-dir . -- python ray_jobs/build_index.py --config configs/demo.yaml
"""

import sys

from recsys.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("index"))
