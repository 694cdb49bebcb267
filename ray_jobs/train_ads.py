"""Ray job: the ads stage (the ad world, the calibrated ad pCTR model fine-tuned from the latest retrieval model).

    ray job submit --working-dir . -- python ray_jobs/train_ads.py --config benchmarks/configs/ads-shop.yaml
"""

import sys

from recsys.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("ads"))
