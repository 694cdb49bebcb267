"""Ray job: the CTR ranking stage (binary cross-entropy on impressions with click labels).

    ray job submit --working-dir . -- python ray_jobs/train_ctr.py --config configs/demo.yaml --set ctr.enabled=true
"""

import sys

from recsys.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("ctr"))
