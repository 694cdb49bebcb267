"""Ray job: the pretrain stage.

    ray job submit --working-dir . -- python ray_jobs/pretrain.py --config configs/demo.yaml
"""

import sys

from recsys.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("pretrain"))
