"""Ray job: the forecast stage (demand per product, backtest, the published forecast /forecast serves).

    ray job submit --working-dir . -- python ray_jobs/forecast.py --config configs/online-retail.yaml
"""

import sys

from recsys.cli import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("forecast"))
