"""`ray job submit --working-dir . -- python jobs/generate.py --input s3://…/problems.jsonl --backend openai --model http://…/v1 --output s3://…`"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the submitted working dir holds raypipe/

from raypipe.commands import submitted_job  # noqa: E402

if __name__ == "__main__":
    sys.exit(submitted_job("generate"))
