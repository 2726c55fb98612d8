"""Supervised fine-tuning: chat-formatted examples, a generic Trainer loop, and LoRA runs.

Every fine-tuning stage of both papers goes through here: the Synth-Empathy discriminator
(ED train) and final model (ED train + selected synthetic data), the Efficient-Empathy
sensibility and rationality experts (LoRA, r=8, alpha=32, dropout 0.1, all projections;
HF Trainer + DeepSpeed ZeRO-3 in the paper), and the routers of the merged MoE (train_router).

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

from . import prompts
from .errors import PipelineError
from .io import atomic_path, read_parquet, sample_rows
from .models import stabilise_saved_configs, torch_dtype

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
                 system_prompt: str | None = prompts.LISTENER_SYSTEM_PROMPT) -> tuple[list[dict], int]:
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
    chat = prompts.dialogue_chat(context, system_prompt)
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
        ids = _encode(tokenizer, _render(tokenizer, prompts.dialogue_chat(context[start:], system_prompt), True))
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


# ---- router training (Efficient-Empathy §5.1.3) ---------------------------------------------------

ROUTER_SUFFIX = "mlp.gate.weight"  # where transformers 5 keeps each layer's Mixtral router


def freeze_all_but_routers(model) -> int:
    """requires_grad only on the per-layer routers; returns how many router tensors train.

    Matches the router by its full name ("…mlp.gate.weight"), not by "gate" anywhere in the name,
    which would also train the experts' gate projections (the authors' freeze rule did).
    """
    n = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith(ROUTER_SUFFIX))
        n += param.requires_grad
    if n != model.config.num_hidden_layers:
        raise PipelineError(f"expected one router per layer ({model.config.num_hidden_layers}), found {n}: "
                            "is this a Mixtral checkpoint from btx_merge?")
    return n


def trainable_in_float32(model) -> int:
    """Upcast every trainable parameter to float32 in place; the frozen rest keeps its dtype.

    Mixed precision with float32 master weights: AdamW's state is then float32 too, and steps below
    a bf16 weight's rounding step accumulate instead of vanishing (for |w| >= 2^-5 a bf16 ulp is
    2.4e-4, so a step of 1e-4 rounds away every time). The forward is unchanged: with train.bf16
    the Trainer runs it under bf16 autocast, which casts the float32 router weight to bf16 for its
    F.linear with the bf16 hidden state (MixtralTopKRouter is a bare F.linear, then a float32
    softmax), and the gradient flows back through that cast into the float32 weight. Without
    train.bf16 the whole model is float32 already. DeepSpeed casts the module to its own dtype and
    keeps float32 master weights itself (and ZeRO-3 parameters hold no data here), so under it
    nothing is touched. Returns how many tensors were upcast.
    """
    from accelerate.utils import DistributedType

    if PartialState().distributed_type == DistributedType.DEEPSPEED:
        return 0
    n = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()  # same Parameter object: names, hooks, tying unchanged
            n += 1
    return n


def _layer_index(name: str) -> int:
    return int(name.split("layers.", 1)[1].split(".", 1)[0])


class RestoreRoutersOnResume(TrainerCallback):
    """On resume, put the checkpoint's router weights into the model the Trainer is resuming.

    Trainer._load_from_checkpoint loads the checkpoint's safetensors with a plain load_state_dict,
    but transformers 5 writes Mixtral in its original on-disk layout
    (model.layers.<i>.block_sparse_moe.gate.weight) while the model in memory calls the router
    model.layers.<i>.mlp.gate.weight. No MoE-layer key matches, the Trainer only warns ("missing
    keys ... unexpected keys"), and the run would go on from the checkpoint's step and AdamW state
    but with the routers of moe_dir. Only the routers train, so copying them back (float32, as the
    checkpoint holds them) restores the run exactly; a test checks it ends bit-identical to an
    uninterrupted one. DeepSpeed restores its own checkpoints by in-memory names: nothing done there.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from accelerate.utils import DistributedType
        from safetensors import safe_open

        if state.global_step == 0 or model is None or PartialState().distributed_type == DistributedType.DEEPSPEED:
            return
        checkpoint = get_last_checkpoint(str(args.output_dir))
        routers = {_layer_index(n): p for n, p in model.named_parameters() if n.endswith(ROUTER_SUFFIX)}
        saved: dict[int, torch.Tensor] = {}
        for file in sorted(Path(checkpoint).glob("*.safetensors")) if checkpoint else ():
            with safe_open(str(file), "pt") as f:
                for key in f.keys():
                    if key.endswith(".gate.weight") and ".experts." not in key and "layers." in key:
                        saved[_layer_index(key)] = f.get_tensor(key)
        if saved.keys() != routers.keys():
            raise PipelineError(f"{checkpoint or args.output_dir}: resuming at step {state.global_step} but the "
                                f"checkpoint has routers for {len(saved)} of {len(routers)} layers; "
                                f"delete {args.output_dir} to start afresh")
        with torch.no_grad():
            for i, param in routers.items():
                param.copy_(saved[i])


def train_router(moe_dir: str | Path, samples: pl.DataFrame, train_cfg: dict, out_dir: str | Path,
                 loss_csv: str | Path, *, callbacks: Sequence[Any] = ()) -> dict:
    """Fine-tune only the routers of the MoE at moe_dir on samples (NLL of the response, Eq. 10).

    With train.bf16 the frozen model stays in the checkpoint's stored dtype (bf16 after btx_merge)
    and runs under bf16 autocast, while the routers train as float32 parameters with float32 AdamW
    state (trainable_in_float32); without it everything trains in float32. Either way the whole MoE
    is saved to out_dir in the stored dtype, so every tensor but the routers is bit-identical to
    moe_dir. `callbacks` (TrainerCallbacks) see the model before that final cast. Returns a report
    for the stage log.
    """
    from transformers import AutoConfig

    started = time.time()
    tokenizer, examples, n_skipped = load_examples(moe_dir, samples, int(train_cfg["max_length"]), out_dir)

    # The dtype the merged checkpoint is stored in (loading below overwrites config.dtype).
    stored_dtype = torch_dtype(str(AutoConfig.from_pretrained(str(moe_dir)).dtype or "float32").removeprefix("torch."))
    args = training_arguments(train_cfg, checkpoint_dir(out_dir))  # before loading: DeepSpeed ZeRO-3
    set_seed(int(train_cfg["seed"]))
    # Loading in the stored dtype, never rounding to a narrower one, is what keeps the frozen
    # tensors bit-identical through the save.
    dtype = stored_dtype if train_cfg["bf16"] else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(str(moe_dir), dtype=dtype)
    except OSError as exc:
        raise PipelineError(f"cannot load model from {moe_dir}: {str(exc).splitlines()[0]}") from None
    n_routers = freeze_all_but_routers(model)
    trainable_in_float32(model)

    class SaveInStoredDtype(TrainerCallback):
        # The routers (without train.bf16 the whole model) are float32 while training; casting back
        # before the save keeps models/moe the size of the merged checkpoint and leaves every frozen
        # tensor exactly as it was. The routers are saved in the stored dtype too. Measured with
        # transformers 5.23: a bf16 checkpoint holding float32 routers loads cleanly, but
        # from_pretrained (default, dtype="auto" or bfloat16) casts those routers to bf16 anyway, and
        # vLLM runs all weights in one dtype, so float32 routers on disk would buy
        # a mixed-dtype file and nothing else. What the rounding loses: each router weight moves by
        # at most half a bf16 ulp (relative 2^-9), the rounding every other weight of the checkpoint
        # already has (measured on routers trained in the tests: routing probabilities move by at
        # most 1.3e-3 for x ~ N(0, I)). It is one rounding of the result, not a loss per step: the
        # steps below that size accumulated in float32 and are in the weights being rounded.
        def on_train_end(self, args, state, control, model=None, **kwargs):
            if model is not None:
                model.to(stored_dtype)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dtypes = {p.requires_grad: str(p.dtype).removeprefix("torch.") for p in model.parameters()}
    print(f"router training: {n_routers} routers, {trainable:,} trainable parameters in {dtypes[True]}, "
          f"frozen weights in {dtypes[False]}; {len(examples)} examples, {n_skipped} skipped")
    run = run_trainer(model, tokenizer, examples, train_cfg, out_dir, loss_csv, args=args,
                      callbacks=[RestoreRoutersOnResume(), *callbacks, SaveInStoredDtype()])
    return {"n_examples": len(examples), "n_skipped": n_skipped, "routers": n_routers,
            "trainable_parameters": trainable, **run, "seconds": round(time.time() - started, 1)}
