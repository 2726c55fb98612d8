"""LoRA SFT step time on this machine: float32 vs bf16 autocast, batch 8 x 128 tokens, real SmolLM2-135M.

Runs the pipeline's own path (sft_examples -> run_trainer, the demo `lora` shape) and times the
optimiser steps after the first (warm-up). Writes benchmarks/results/training.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_generation import model_dir  # noqa: E402

from empathy_pipeline.modeling.training import run_trainer, sft_examples  # noqa: E402

BATCH, LENGTH, STEPS = 8, 128, 4
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class StepClock(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def seconds_per_step(base: Path, tokenizer, examples: list[dict], bf16: bool) -> float:
    set_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    cfg = {"max_steps": STEPS, "epochs": 1, "learning_rate": 2e-4, "batch_size": BATCH,
           "gradient_accumulation_steps": 1, "max_length": LENGTH, "bf16": bf16, "logging_steps": 1, "seed": 0}
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        run_trainer(model, tokenizer, examples, cfg, Path(tmp) / "adapter", Path(tmp) / "loss.csv",
                    callbacks=[clock])
    gaps = [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)]  # first step = warm-up
    return sum(gaps) / len(gaps)


def main() -> None:
    base = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    # Over-long contexts are cut to exactly LENGTH tokens, so every batch is 8 x 128.
    turn = " ".join(f"i keep thinking about day {i} of that trip" for i in range(40))
    samples = pl.DataFrame({"context": [[f"{i}: {turn}"] for i in range(BATCH * STEPS)],
                            "response": ["that sounds like it meant a lot to you ."] * (BATCH * STEPS)})
    examples, _ = sft_examples(samples, tokenizer, LENGTH)
    assert all(len(e["input_ids"]) == LENGTH for e in examples)
    result = {"batch": BATCH, "tokens": LENGTH, "threads": torch.get_num_threads(),
              "fp32_s_per_step": round(seconds_per_step(base, tokenizer, examples, bf16=False), 2),
              "bf16_autocast_s_per_step": round(seconds_per_step(base, tokenizer, examples, bf16=True), 2)}
    out = ROOT / "benchmarks" / "results" / "training.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
