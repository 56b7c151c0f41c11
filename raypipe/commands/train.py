"""raypipe train: supervised fine-tuning on a curated dataset with Ray Train + DeepSpeed."""
from __future__ import annotations

import sys

from raypipe.commands import Command, Refused
from raypipe.train.config import TrainConfig


def run(config: TrainConfig) -> int:
    import json
    import logging

    from raypipe.train.run import run_train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        summary = run_train(config)
    except (ValueError, FileNotFoundError) as e:
        raise Refused(str(e)) from e
    except Exception as e:  # a failed Ray Train run (worker error, lost node): checkpoints stay for a restart
        print(f"raypipe train: training failed: {str(e)[:2000]}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("final_loss", "steps", "tokens_per_s", "model_path")}))
    return 0


COMMAND = Command("train", "SFT on a curated dataset (Ray Train + DeepSpeed)", TrainConfig, run, description=__doc__,
                  example="raypipe train --data out/curated --model tiny --output out/sft --max-steps 20")
