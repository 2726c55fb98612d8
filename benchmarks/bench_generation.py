"""Transformers-backend throughput: batched (batch 16) vs one request at a time, real SmolLM2-135M.

Writes benchmarks/results/generation.json. Goal: batched >= 5x the tokens/s of batch 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from empathy_pipeline.data.chat import dialogue_chat  # noqa: E402
from empathy_pipeline.llm.backends import load_backend  # noqa: E402
from empathy_pipeline.llm.base import Sampling  # noqa: E402
from empathy_pipeline.modeling.models import EMBEDDED_CHAT_MODEL, materialize_chat_model  # noqa: E402

PROMPTS = [
    "I lost my dog today.", "My sister got married!", "I failed my driving test again.",
    "My boss yelled at me in front of everyone.", "I finally finished my marathon!",
    "I miss my grandmother so much.", "Someone stole my bike this morning.", "I got the job!",
]
NEW_TOKENS = 32
BATCH = 16


def model_dir() -> Path:
    out = ROOT / ".cache" / "test-models" / EMBEDDED_CHAT_MODEL
    if not (out / "config.json").exists():
        materialize_chat_model(EMBEDDED_CHAT_MODEL, out, dtype="bfloat16")
    return out


def tokens_per_second(backend, chats) -> float:
    started = time.perf_counter()
    replies = backend.generate(chats, Sampling(max_new_tokens=NEW_TOKENS))
    elapsed = time.perf_counter() - started
    generated = sum(len(backend.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies)
    return generated / elapsed


def _with_batch(backend, size: int):
    backend.batch_size = size
    return backend


def main() -> None:
    torch.set_num_threads(2)
    chats = [dialogue_chat([PROMPTS[i % len(PROMPTS)]]) for i in range(BATCH)]
    batched = load_backend({"backend": "transformers", "batch_size": BATCH, "show_progress": False}, model=str(model_dir()))
    batched.generate(chats[:2], Sampling(max_new_tokens=4))  # warm-up
    single_tps = tokens_per_second(_with_batch(batched, 1), chats[:4])
    batched_tps = tokens_per_second(_with_batch(batched, BATCH), chats)
    result = {
        "model": EMBEDDED_CHAT_MODEL, "threads": torch.get_num_threads(), "max_new_tokens": NEW_TOKENS,
        "batch1_tokens_per_s": round(single_tps, 1), f"batch{BATCH}_tokens_per_s": round(batched_tps, 1),
        "speedup": round(batched_tps / single_tps, 2), "goal_speedup": 5.0,
    }
    out = ROOT / "benchmarks" / "results" / "generation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
