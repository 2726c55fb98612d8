"""Supervised fine-tuning: chat-formatted examples, a generic Trainer loop, and LoRA runs.

Every fine-tuning stage of both papers goes through here: the Synth-Empathy discriminator
(ED train) and final model (ED train + selected synthetic data), the Efficient-Empathy
sensibility and rationality experts (LoRA, r=8, alpha=32, dropout 0.1, all projections;
HF Trainer + DeepSpeed ZeRO-3 in the paper). The routers of the merged MoE train through the
same loop (efficient_empathy/router.py).

The loop is the stock transformers Trainer, so scaling out is configuration, not code:
`accelerate launch --config_file configs/accelerate/<x>.yaml stages/train.py ...` runs the
same script on several GPUs or under DeepSpeed ZeRO-3 (docs/gpu.md).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from accelerate import PartialState
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import atomic_path, read_parquet, sample_rows
from empathy_pipeline.data.chat import LISTENER_SYSTEM_PROMPT, dialogue_chat
from empathy_pipeline.modeling.models import stabilise_saved_configs, torch_dtype

IGNORE_INDEX = -100  # label value the loss skips (torch CrossEntropyLoss ignore_index)
TRAIN_KEYS = ("max_steps", "epochs", "learning_rate", "batch_size", "gradient_accumulation_steps",
              "max_length", "bf16", "logging_steps", "seed")
# transformers 5.23 (the CPU lock) calls it activation_checkpointing and warns on the old name; the
# transformers vLLM's pin resolves on a GPU box may be an older 5.x that knows only the old one.
_CHECKPOINTING_ARG = next(name for name in ("activation_checkpointing", "gradient_checkpointing")
                          if name in TrainingArguments.__dataclass_fields__)


# ---- examples -------------------------------------------------------------------------------

SFT_COLUMNS = ["sample_id", "context", "response"]


def load_samples(paths: Sequence[str | Path], max_samples: int | None, seed: int) -> pl.DataFrame:
    """The SFT samples (sample_id, context, response) of every training run: the given tables
    concatenated (synthetic tables carry extra provenance columns, dropped here), optionally subsampled."""
    tables = []
    for path in paths:
        table = read_parquet(path)
        missing = [c for c in SFT_COLUMNS if c not in table.columns]
        if missing:
            raise PipelineError(f"{path}: missing column(s) {', '.join(missing)}")
        tables.append(table.select(SFT_COLUMNS))
    samples = sample_rows(pl.concat(tables, how="vertical_relaxed"), max_samples, seed)
    if samples.height == 0:
        raise PipelineError(f"{' + '.join(map(str, paths))}: no training samples")
    return samples


def sft_examples(samples: pl.DataFrame, tokenizer, max_length: int,
                 system_prompt: str | None = LISTENER_SYSTEM_PROMPT) -> tuple[list[dict], int]:
    """Tokenise samples (context, response) as chats; the loss sees only the listener's response.

    Each example is the chat template applied to dialogue_chat(context) plus the response as the
    assistant turn. Labels are IGNORE_INDEX everywhere except the response tokens and the
    end-of-turn token that closes them (so the model learns to stop). When the example is longer
    than max_length the context is cut from the left (oldest turns first), so the response always
    survives. Samples whose response alone does not fit, or is empty, are skipped.

    Returns (examples, n_skipped); each example has input_ids, attention_mask, labels (lists).
    """
    missing = [c for c in ("context", "response") if c not in samples.columns]
    if missing:
        raise PipelineError(f"training samples: missing column(s) {', '.join(missing)}")
    special_ids = set(tokenizer.all_special_ids)
    examples: list[dict] = []
    n_skipped = 0
    for context, response in zip(samples["context"].to_list(), samples["response"].to_list(), strict=True):
        context = list(context or [])
        if not response or not response.strip() or not context:
            n_skipped += 1
            continue
        target = _response_ids(tokenizer, context, response, system_prompt, special_ids)
        budget = max_length - len(target)
        if budget < 1:  # not even one context token fits before the response
            n_skipped += 1
            continue
        prompt = _prompt_ids(tokenizer, context, system_prompt, budget)
        input_ids = prompt + target
        examples.append({
            "input_ids": input_ids,
            "attention_mask": [1] * len(input_ids),
            "labels": [IGNORE_INDEX] * len(prompt) + target,
        })
    return examples, n_skipped


def _render(tokenizer, chat, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation_prompt)


def _encode(tokenizer, text: str) -> list[int]:
    # The template already wrote the special tokens (BOS, turn markers); the generation backend
    # encodes prompts the same way, so training and inference see identical token ids.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _response_ids(tokenizer, context: list[str], response: str, system_prompt, special_ids) -> list[int]:
    """Token ids of the assistant turn's content up to and including its end-of-turn token."""
    chat = dialogue_chat(context, system_prompt)
    prompt_text = _render(tokenizer, chat, generation_prompt=True)
    full_text = _render(tokenizer, chat + [{"role": "assistant", "content": response}], generation_prompt=False)
    if not full_text.startswith(prompt_text):
        raise PipelineError(
            f"{tokenizer.name_or_path}: chat template's assistant turn does not extend its generation "
            "prompt, so the response cannot be located for the loss mask"
        )
    completion = _encode(tokenizer, full_text[len(prompt_text):])
    # The first special token after the content is the end of turn (<|im_end|>, <|eot_id|>, ...);
    # what the template writes after it (a newline) is not something the model must generate.
    end = next((i for i, tok in enumerate(completion) if tok in special_ids), len(completion) - 1)
    return completion[: end + 1]


def _prompt_ids(tokenizer, context: list[str], system_prompt, budget: int) -> list[int]:
    """Generation-prompt ids of at most `budget` tokens, dropping the oldest turns first."""
    # Drop whole (speaker, listener) pairs so the chat stays well-formed and still ends on the
    # speaker; only when the last speaker turn alone is too long, cut its tokens from the left.
    for start in range(0, len(context), 2):
        ids = _encode(tokenizer, _render(tokenizer, dialogue_chat(context[start:], system_prompt), True))
        if len(ids) <= budget:
            return ids
    return ids[-budget:]


# ---- the training loop ------------------------------------------------------------------------

def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where a run writing out_dir keeps its resumable checkpoints: <parent>/.checkpoints/<name>."""
    out_dir = Path(out_dir)
    return out_dir.parent / ".checkpoints" / out_dir.name


def training_arguments(train_cfg: dict, work_dir: str | Path):
    """transformers TrainingArguments from the params `train` section.

    Create these BEFORE loading a model: under `accelerate launch` with DeepSpeed ZeRO-3 they
    register the DeepSpeed config, which lets from_pretrained load the weights already sharded.
    """
    _require_train_keys(train_cfg)
    return TrainingArguments(
        output_dir=str(work_dir),
        max_steps=int(train_cfg["max_steps"]),
        num_train_epochs=float(train_cfg["epochs"]),
        learning_rate=float(train_cfg["learning_rate"]),
        per_device_train_batch_size=int(train_cfg["batch_size"]),
        gradient_accumulation_steps=int(train_cfg["gradient_accumulation_steps"]),
        bf16=bool(train_cfg["bf16"]),
        # Not a required key: the train dicts of the tests and benchmarks predate it. Non-reentrant
        # (torch's recommended form): the reentrant one computes no gradient through a segment whose
        # inputs need none, as the frozen embeddings' output under LoRA, unless they are made to.
        **{_CHECKPOINTING_ARG: bool(train_cfg.get("gradient_checkpointing", False)),
           f"{_CHECKPOINTING_ARG}_kwargs": {"use_reentrant": False}},
        use_cpu=not torch.cuda.is_available(),  # bf16 on CPU means autocast; transformers wants this said
        logging_steps=int(train_cfg["logging_steps"]),
        seed=int(train_cfg["seed"]),
        data_seed=int(train_cfg["seed"]),
        # Checkpoints exist only so a killed run resumes; at demo scale none is ever written.
        save_strategy="steps",
        save_steps=int(train_cfg.get("save_steps", 500)),
        save_total_limit=1,
        report_to="none",
        remove_unused_columns=False,  # examples carry exactly the model inputs already
        label_names=["labels"],
        # Every trainable parameter (LoRA, router) is used on every step, so DDP can skip its
        # extra autograd-graph walk looking for unused ones.
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )


def _require_train_keys(train_cfg: dict) -> None:
    missing = sorted(set(TRAIN_KEYS) - set(train_cfg))
    if missing:
        raise PipelineError(f"params.yaml train: missing key(s) {', '.join(missing)}")


def run_trainer(model, tokenizer, examples: Sequence[dict], train_cfg: dict, out_dir: str | Path,
                loss_csv: str | Path, *, args=None, callbacks: Sequence[Any] = ()) -> dict:
    """Train `model` on tokenised `examples`; save it (model.save_pretrained + tokenizer) to out_dir.

    Generic: only the parameters the caller left trainable are updated (LoRA adapters, a router).
    Checkpoints go to checkpoint_dir(out_dir) and a rerun with the same model, data and settings
    resumes from the last one; the directory is deleted on success. `args` (TrainingArguments for
    that directory) defaults to training_arguments(train_cfg, ...); pass them when they had to
    exist before the model was loaded. Writes the loss curve to loss_csv (step, loss).
    Returns steps, final_loss, train_loss (mean over the run), seconds.
    """
    if not examples:
        raise PipelineError(f"{out_dir}: no training examples")
    if not any(p.requires_grad for p in model.parameters()):
        raise PipelineError(f"{out_dir}: the model has no trainable parameters")
    out_dir, loss_csv = Path(out_dir), Path(loss_csv)
    work_dir = checkpoint_dir(out_dir)
    state = PartialState()
    if state.is_main_process:
        _reset_work_dir_unless_same(work_dir, _fingerprint(model, examples, train_cfg))
    state.wait_for_everyone()

    started = time.time()
    tokenizer.padding_side = "right"  # positions start at 0 on every row; labels pad with IGNORE_INDEX
    trainer = Trainer(
        model=model,
        args=args if args is not None else training_arguments(train_cfg, work_dir),
        train_dataset=list(examples),
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX),
        processing_class=tokenizer,  # saved next to the weights, chat template included
        callbacks=[LossCsvCallback(loss_csv), *callbacks],
    )
    checkpoint = get_last_checkpoint(str(work_dir)) if work_dir.is_dir() else None
    if checkpoint:
        print(f"resuming from {checkpoint}")
    result = trainer.train(resume_from_checkpoint=checkpoint)

    if trainer.args.should_save:
        with atomic_path(out_dir) as tmp:
            trainer.save_model(str(tmp))
            (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle of our args, not the model
            stabilise_saved_configs(tmp)
        shutil.rmtree(work_dir, ignore_errors=True)
    else:
        # Other ranks join the ZeRO-3 weight gather; only the main process writes anything.
        trainer.save_model(str(work_dir / "not-written"))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "steps": trainer.state.global_step,
        "final_loss": round(losses[-1], 4) if losses else None,
        "train_loss": round(result.training_loss, 4),
        "seconds": round(time.time() - started, 1),
    }


def _fingerprint(model, examples: Sequence[dict], train_cfg: dict) -> str:
    """Identity of a training run: resuming a checkpoint of a different run would be wrong."""
    h = hashlib.sha256()
    # Settings that change what is trained; how often it logs or saves, how it is launched, or
    # whether it recomputes activations (a run killed out of memory may resume with it on) do not.
    shaping = {k: v for k, v in train_cfg.items()
               if k not in ("logging_steps", "save_steps", "launcher", "gradient_checkpointing")}
    h.update(json.dumps(shaping, sort_keys=True, default=str).encode())
    h.update(type(model).__name__.encode())
    h.update(model.config.to_json_string(use_diff=False).encode())
    h.update(repr(getattr(model, "peft_config", None)).encode())
    for name, p in model.named_parameters():
        if p.requires_grad:
            h.update(f"{name}{tuple(p.shape)}".encode())
    for ex in examples:
        h.update(np.asarray(ex["input_ids"], dtype=np.int64).tobytes())
        h.update(np.asarray(ex["labels"], dtype=np.int64).tobytes())
    return h.hexdigest()


def _reset_work_dir_unless_same(work_dir: Path, fingerprint: str) -> None:
    marker = work_dir / "fingerprint.txt"
    if work_dir.exists() and not (marker.exists() and marker.read_text().strip() == fingerprint):
        print(f"{work_dir}: checkpoints of a different run, starting afresh")
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint + "\n")


class LossCsvCallback(TrainerCallback):
    """Writes the logged training loss as CSV (step, loss) for `dvc plots`.

    Written from state.log_history, which checkpoints carry, so a resumed run keeps its curve.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _write(self, state) -> None:
        if not state.is_world_process_zero:
            return
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss"])
            for entry in state.log_history:
                if "loss" in entry:
                    w.writerow([entry["step"], round(float(entry["loss"]), 6)])

    def on_save(self, args, state, control, **kwargs):
        self._write(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._write(state)


# ---- LoRA ------------------------------------------------------------------------------------

def load_examples(model_dir, samples: pl.DataFrame, max_length: int, out_dir) -> tuple:
    """(tokenizer, examples, n_skipped) for training the model in model_dir; none fitting is an error."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except OSError as exc:
        raise PipelineError(f"cannot load tokenizer from {model_dir}: {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples, n_skipped = sft_examples(samples, tokenizer, max_length)
    if not examples:
        raise PipelineError(f"{out_dir}: none of {samples.height} samples fits max_length {max_length} (all skipped)")
    return tokenizer, examples, n_skipped


def train_lora(base_dir: str | Path, samples: pl.DataFrame, lora_cfg: dict, train_cfg: dict,
               out_dir: str | Path, loss_csv: str | Path) -> dict:
    """LoRA-fine-tune the model at base_dir on samples; save only the adapter + tokenizer to out_dir.

    Weights train in float32 on CPU (train.bf16 turns on bf16 autocast); on GPU with bf16 the
    frozen base is loaded in bfloat16. Returns a report for the stage log.
    """
    _require_train_keys(train_cfg)
    if not (Path(base_dir) / "config.json").is_file():  # a local directory, never a hub lookup
        raise PipelineError(f"{base_dir}: base model directory not found (run the `models` stage)")
    started = time.time()
    tokenizer, examples, n_skipped = load_examples(base_dir, samples, int(train_cfg["max_length"]), out_dir)

    # Before from_pretrained: lets DeepSpeed ZeRO-3 (if launched so) shard the weights at load.
    args = training_arguments(train_cfg, checkpoint_dir(out_dir))
    set_seed(int(train_cfg["seed"]))  # LoRA A matrices are random-initialised
    dtype = "bfloat16" if torch.cuda.is_available() and train_cfg["bf16"] else "float32"
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch_dtype(dtype))
    except OSError as exc:
        raise PipelineError(f"cannot load model from {base_dir}: {str(exc).splitlines()[0]}") from None
    model = get_peft_model(model, LoraConfig(
        r=int(lora_cfg["r"]),
        lora_alpha=int(lora_cfg["alpha"]),
        lora_dropout=float(lora_cfg["dropout"]),
        target_modules=list(lora_cfg["target_modules"]),
        task_type="CAUSAL_LM",
    ))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"LoRA: {trainable:,} trainable parameters; {len(examples)} examples, {n_skipped} skipped "
          f"(empty, or response longer than max_length {train_cfg['max_length']})")
    run = run_trainer(model, tokenizer, examples, train_cfg, out_dir, loss_csv, args=args)
    return {"n_examples": len(examples), "n_skipped": n_skipped, "trainable_parameters": trainable,
            **run, "seconds": round(time.time() - started, 1)}
