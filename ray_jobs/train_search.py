"""Ray job: the search stage (contrastive fine-tuning of the text encoder on the logs' searches).

    ray job submit --working-dir . -- python ray_jobs/train_search.py --config configs/demo.yaml
"""

import sys

from recsys.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("search"))
