"""The papers' n-gram metrics on the papers' whole test set (5,255 items), BERTScore off.

Predictions are the references of the next item (a fixed, deterministic, non-trivial pairing), so
every metric has real work to do. Times `metrics.score_predictions` as the evaluate stage calls
it, best of --repeats runs in this process after one warm-up (imports and pycocoevalcap set-up
excluded, as they are paid once per stage; the token cache is emptied before each run).

Writes benchmarks/results/metrics.json. Goal: <= 5 s on 2 CPU cores.
    python benchmarks/bench_metrics.py [--data ../shared/data/efficient-empathy/test_results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from empathy_pipeline.evaluation import metrics
from empathy_pipeline.evaluation.metrics import score_predictions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "metrics.json"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "efficient-empathy" / "test_results.json"
GOAL_SECONDS = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"bench_metrics: {args.data} not found (the papers' test set; see ../shared/data)")
    references = [item["response"] for item in json.loads(args.data.read_text())]
    predictions = references[1:] + references[:1]
    score_predictions(predictions[:50], references[:50], bertscore=False)  # warm-up
    times, scores = [], {}
    for _ in range(args.repeats):
        metrics._tokens.cache_clear()  # each run pays its tokenisation, as a stage does once
        started = time.perf_counter()
        scores = score_predictions(predictions, references, bertscore=False)
        times.append(time.perf_counter() - started)
    result = {
        "items": len(references), "threads": os.cpu_count(), "repeats": args.repeats,
        "best_seconds": round(min(times), 3), "all_seconds": [round(t, 3) for t in times],
        "goal_seconds": GOAL_SECONDS, "meets_goal": min(times) <= GOAL_SECONDS,
        "scores": scores,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "scores"}))


if __name__ == "__main__":
    main()
