"""LoRA SFT: loss masking, truncation, a real tiny LoRA run on SmolLM2, resume, and the stage CLI."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import torch
from dvc_spec import stage_argv
from transformers import TrainerCallback

from empathy_pipeline.data import chat
from empathy_pipeline.modeling.training import (
    IGNORE_INDEX,
    _reset_work_dir_unless_same,
    checkpoint_dir,
    run_trainer,
    sft_examples,
    train_lora,
)

ROOT = Path(__file__).resolve().parents[2]

DIALOGUES = [
    (["I finally passed my driving test today!"], "Congratulations! You must be so proud of yourself."),
    (["My dog died last week.", "I'm so sorry. How old was he?", "Fourteen. He was with me since college."],
     "That is a long time together. It must feel so empty without him."),
    (["I got a promotion at work."], "That's wonderful news, you worked hard for it."),
    (["Someone stole my bike this morning."], "Oh no, that is so frustrating. Did you report it?"),
    (["My sister is visiting next week.", "Oh nice, how long has it been?", "Almost two years!"],
     "Two years is a long time, you must be excited to see her."),
    (["I failed my exam again."], "I'm sorry, that must be really discouraging."),
]

LORA = {"r": 8, "alpha": 32, "dropout": 0.1,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
TINY_TRAIN = {"max_steps": 2, "epochs": 1, "learning_rate": 0.001, "batch_size": 2,
              "gradient_accumulation_steps": 1, "max_length": 64, "bf16": False, "logging_steps": 1, "seed": 0}


def samples_frame(rows) -> pl.DataFrame:
    return pl.DataFrame(
        {"sample_id": [f"s{i}" for i in range(len(rows))],
         "context": [list(c) for c, _ in rows], "response": [r for _, r in rows]},
        schema={"sample_id": pl.String, "context": pl.List(pl.String), "response": pl.String},
    )


@pytest.fixture(scope="module")
def tokenizer(base_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_dir)


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t in example["labels"] if t != IGNORE_INDEX])


def test_labels_cover_exactly_the_response_and_end_of_turn(tokenizer):
    examples, n_skipped = sft_examples(samples_frame(DIALOGUES[:2]), tokenizer, max_length=512)
    assert n_skipped == 0 and len(examples) == 2
    for ex, (context, response) in zip(examples, DIALOGUES[:2], strict=True):
        assert trained_text(tokenizer, ex) == response + tokenizer.eos_token
        assert len(ex["input_ids"]) == len(ex["labels"]) == len(ex["attention_mask"])
        # Everything before the response is the generation prompt the inference backend sends.
        n_prompt = sum(1 for t in ex["labels"] if t == IGNORE_INDEX)
        prompt = tokenizer.apply_chat_template(chat.dialogue_chat(context), tokenize=False,
                                               add_generation_prompt=True)
        assert tokenizer.decode(ex["input_ids"][:n_prompt]) == prompt
        assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]


def test_long_context_loses_its_oldest_turns_first(tokenizer):
    old = "At the start of this story I was living in a small town near the coast with my parents."
    context = [old, "Oh, that sounds lovely.", "Then we moved.", "Where to?", "To the city, last month."]
    response = "Moving is hard. How are you settling in?"
    (full,), _ = sft_examples(samples_frame([(context, response)]), tokenizer, max_length=512)
    limit = len(full["input_ids"]) - 5  # too long by a few tokens: the first pair must go
    (cut,), n_skipped = sft_examples(samples_frame([(context, response)]), tokenizer, max_length=limit)
    assert n_skipped == 0 and len(cut["input_ids"]) <= limit
    text = tokenizer.decode(cut["input_ids"])
    assert old not in text and "Oh, that sounds lovely." not in text
    assert text.startswith("<|im_start|>system")  # still a well-formed chat with its system prompt
    assert "Then we moved." in text and "To the city, last month." in text
    assert trained_text(tokenizer, cut) == response + tokenizer.eos_token
    # Exactly at the limit nothing is cut.
    (same,), _ = sft_examples(samples_frame([(context, response)]), tokenizer, max_length=len(full["input_ids"]))
    assert same["input_ids"] == full["input_ids"]


def test_single_overlong_turn_is_cut_from_the_left(tokenizer):
    turn = " ".join(f"word{i}" for i in range(80)) + " and now the end."
    response = "That is a lot to deal with."
    (ex,), n_skipped = sft_examples(samples_frame([([turn], response)]), tokenizer, max_length=40)
    assert n_skipped == 0 and len(ex["input_ids"]) == 40
    text = tokenizer.decode(ex["input_ids"])
    assert "word0 " not in text and "and now the end." in text
    assert trained_text(tokenizer, ex) == response + tokenizer.eos_token


def test_overlong_and_empty_responses_are_skipped_and_counted(tokenizer):
    long_response = " ".join(["I understand how you feel"] * 30)
    rows = [DIALOGUES[0], (["Hello."], long_response), (["Hi."], "  ")]
    examples, n_skipped = sft_examples(samples_frame(rows), tokenizer, max_length=64)
    assert n_skipped == 2
    assert [trained_text(tokenizer, e) for e in examples] == [DIALOGUES[0][1] + tokenizer.eos_token]


def read_loss_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_tiny_lora_run_trains_and_saves_a_plain_peft_adapter(base_model_dir, tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, loss_csv = tmp_path / "models" / "tiny", tmp_path / "plots" / "tiny.csv"
    report = train_lora(base_model_dir, samples_frame(DIALOGUES), LORA, TINY_TRAIN, out, loss_csv)

    assert report["steps"] == 2 and report["n_examples"] == len(DIALOGUES) and report["n_skipped"] == 0
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not (out / "model.safetensors").exists() and not (out / "training_args.bin").exists()
    assert (out / "chat_template.jinja").exists()
    assert not checkpoint_dir(out).exists()  # checkpoints are only kept for an unfinished run
    rows = read_loss_csv(loss_csv)
    assert [int(r["step"]) for r in rows] == [1, 2] and all(math.isfinite(float(r["loss"])) for r in rows)

    # LoRA B starts at zero, so an untrained adapter would leave the logits unchanged.
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
    ids = tokenizer("I lost my keys and I am late for work.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = base(ids).logits
        adapted = PeftModel.from_pretrained(base, out).eval()
        after = adapted(ids).logits
    assert (after - before).abs().max().item() > 1e-4


class Killed(Exception):
    pass


class KillAtStep(TrainerCallback):
    """Records the steps it sees and dies at `step`, as a killed job would."""

    def __init__(self, step):
        self.step, self.steps_run = step, []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps_run.append(state.global_step)
        if state.global_step == self.step:
            raise Killed()


def fresh_lora_model(base_model_dir, lora_dropout: float = 0.0):
    """The base in float32 with a small LoRA whose random A matrices are the same on every call."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=lora_dropout,
                                            task_type="CAUSAL_LM"))


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(base_model_dir, tokenizer, tmp_path):
    def fresh_model():
        return fresh_lora_model(base_model_dir)

    examples, _ = sft_examples(samples_frame(DIALOGUES), tokenizer, max_length=64)
    cfg = {**TINY_TRAIN, "max_steps": 3, "save_steps": 1}
    out, loss_csv = tmp_path / "models" / "resumed", tmp_path / "loss.csv"

    with pytest.raises(Killed):
        run_trainer(fresh_model(), tokenizer, examples, cfg, out, loss_csv, callbacks=[KillAtStep(2)])
    assert (checkpoint_dir(out) / "checkpoint-1").is_dir() and not out.exists()

    watcher = KillAtStep(None)
    report = run_trainer(fresh_model(), tokenizer, examples, cfg, out, loss_csv, callbacks=[watcher])
    assert watcher.steps_run == [2, 3]  # step 1 came from the checkpoint, not from training again
    assert report["steps"] == 3 and (out / "adapter_config.json").exists()
    assert [int(r["step"]) for r in read_loss_csv(loss_csv)] == [1, 2, 3]


class CheckpointingProbe(TrainerCallback):
    """Per step: whether the model being trained recomputes its activations, and the logged loss and
    gradient norm (log_history's full-precision floats, not the loss CSV's rounded ones)."""

    def __init__(self):
        self.checkpointing, self.logs = [], []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.checkpointing.append(model.is_activation_checkpointing)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append((logs["loss"], logs["grad_norm"]))


@pytest.mark.slow
def test_gradient_checkpointing_trains_the_same_adapter(base_model_dir, tokenizer, tmp_path):
    """train.gradient_checkpointing only trades memory for time: one step from the same seed and data
    gives the same loss, gradient and adapter with it on or off, and on, the model really recomputes."""
    from safetensors.torch import load_file

    examples, _ = sft_examples(samples_frame(DIALOGUES[:2]), tokenizer, max_length=32)
    runs = {}
    for checkpointing in (False, True):
        cfg = {**TINY_TRAIN, "max_steps": 1, "batch_size": 2, "gradient_checkpointing": checkpointing}
        out = tmp_path / f"checkpointing-{checkpointing}"
        probe = CheckpointingProbe()
        # Dropout as in the papers' LoRA: the recompute must draw the masks the first forward drew.
        run_trainer(fresh_lora_model(base_model_dir, lora_dropout=0.1), tokenizer, examples, cfg, out,
                    tmp_path / f"{out.name}.csv", callbacks=[probe])
        runs[checkpointing] = probe, load_file(out / "adapter_model.safetensors")

    (off, off_adapter), (on, on_adapter) = runs[False], runs[True]
    assert off.checkpointing == [False] and on.checkpointing == [True]
    (off_loss, off_grad_norm), = off.logs
    (on_loss, on_grad_norm), = on.logs
    assert on_loss == pytest.approx(off_loss, rel=1e-6)
    assert on_grad_norm == pytest.approx(off_grad_norm, rel=1e-5)
    assert on_adapter.keys() == off_adapter.keys()
    for name, tensor in off_adapter.items():
        torch.testing.assert_close(on_adapter[name], tensor, rtol=0, atol=1e-6, msg=name)
    # LoRA B starts at zero: had no gradient reached it through the recomputed layers, it would still be.
    assert all(on_adapter[n].abs().max() > 0 for n in on_adapter if "lora_B" in n)
    print(f"\ncheckpointing off/on: loss {off_loss!r}/{on_loss!r}, grad norm {off_grad_norm!r}/{on_grad_norm!r}, "
          f"adapter max |diff| {max((on_adapter[n] - t).abs().max().item() for n, t in off_adapter.items()):.2e}")


def test_checkpoints_of_a_different_run_are_discarded(tmp_path):
    work = tmp_path / "work"
    _reset_work_dir_unless_same(work, "run-a")
    (work / "checkpoint-5").mkdir()
    _reset_work_dir_unless_same(work, "run-a")
    assert (work / "checkpoint-5").is_dir()
    _reset_work_dir_unless_same(work, "run-b")
    assert not (work / "checkpoint-5").exists()


def run_stage(cwd: Path, stage: str, **overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(stage_argv(stage, **overrides), cwd=cwd, capture_output=True, text=True, timeout=120)


def test_stage_rejects_an_unknown_params_section_in_one_line(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    proc = run_stage(tmp_path, "train_expert@rationality", section="teacher")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["error: train: params.yaml: no section 'teacher'"]


def test_stage_rejects_an_empty_training_set_in_one_line(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data" / "split").mkdir(parents=True)
    samples_frame([]).write_parquet(tmp_path / "data" / "split" / "rationality.parquet")
    proc = run_stage(tmp_path, "train_expert@rationality")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: train: data/split/rationality.parquet: no training samples"]


def test_saved_configs_do_not_depend_on_the_process(tmp_path):
    """peft's set-ordered target_modules and the env-dependent local_files_only are normalised, so two
    saves of the same adapter hash the same whatever PYTHONHASHSEED or HF_HUB_OFFLINE were."""
    import json

    from empathy_pipeline.modeling.models import stabilise_saved_configs

    for name, modules, offline in (("a", ["v_proj", "q_proj", "o_proj"], True), ("b", ["o_proj", "v_proj", "q_proj"], False)):
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": modules}))
        (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<e>", "local_files_only": offline}))
        stabilise_saved_configs(d)
    for file in ("adapter_config.json", "tokenizer_config.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["target_modules"] == ["o_proj", "q_proj", "v_proj"]
    assert "local_files_only" not in json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())
