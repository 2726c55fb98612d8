"""The two papers' profiles: the values the papers (or the authors' scripts) state, and that every
key of a profile is a key of params.yaml, so `empathy profile NAME` can write it."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import yaml
from dvc_spec import lookup

from empathy_pipeline.core.profiles import PROFILES_DIR, apply_profile, load_profile

ROOT = Path(__file__).resolve().parents[2]
PAPER_PROFILES = ("synth-empathy", "efficient-empathy")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # EE §5.1.2


@pytest.fixture(scope="module")
def se() -> dict:
    return load_profile("synth-empathy")


@pytest.fixture(scope="module")
def ee() -> dict:
    return load_profile("efficient-empathy")


def _params_keys(tree: dict, prefix: str = "") -> set[str]:
    """Dotted keys of params.yaml, down to its leaves (a list or an empty mapping is a leaf)."""
    keys: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys |= _params_keys(value, path + ".")
        else:
            keys.add(path)
    return keys


def _same(value, expected) -> bool:
    """Equal and of the same YAML type: 60 is not 60.0 is not True, 0.0001 is a float."""
    if isinstance(expected, float):
        return isinstance(value, float) and math.isclose(value, expected, rel_tol=0, abs_tol=1e-12)
    return type(value) is type(expected) and value == expected


def _check(profile: dict, expected: dict, name: str) -> None:
    wrong = {k: (profile.get(k, "<missing>"), v) for k, v in expected.items() if not _same(profile.get(k), v)}
    assert not wrong, f"profiles/{name}.yaml: {{key: (has, paper states)}} = {wrong}"


# ---- every key has a place in params.yaml ------------------------------------------------------

@pytest.mark.parametrize("name", PAPER_PROFILES)
def test_every_profile_key_is_a_params_key(name):
    params = _params_keys(yaml.safe_load((ROOT / "params.yaml").read_text()))
    unknown = sorted(set(load_profile(name)) - params)
    assert not unknown, f"profiles/{name}.yaml keys that params.yaml lacks: {unknown}"


@pytest.mark.parametrize("name", PAPER_PROFILES)
def test_profile_applies_and_names_itself(name, tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_profile(name, params, PROFILES_DIR)
    switched = yaml.safe_load(params.read_text())
    assert switched["profile"] == name
    for dotted, value in load_profile(name).items():
        assert lookup(switched, dotted) == value, f"{dotted}: params.yaml did not get profiles/{name}.yaml's {value!r}"


@pytest.mark.parametrize("name", PAPER_PROFILES)
def test_switched_params_pass_the_schema(name, tmp_path):
    """Types and ranges as the stages check them (num_seeds 1.0 not 1, 0.0001 a float, ...). The ED
    directory need not exist on this machine, so prepare.source's existence check is left out."""
    from empathy_pipeline.core import params as schema

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    apply_profile(name, path, PROFILES_DIR)
    problems = [p for p in schema.check(path) if "prepare.source" not in p]
    assert not problems, "\n".join(problems)


# ---- Synth-Empathy --------------------------------------------------------------------------

def test_synth_empathy_models(se):
    _check(se, {
        "profile": "synth-empathy",
        "models.synth_base": "Qwen/Qwen1.5-7B-Chat",                 # SE Table 2 "ours" row, §4.1.2
        "models.embedding": "Alibaba-NLP/gte-Qwen2-7B-instruct",     # SE §3.2
        "models.embedding_prompt": "query",                          # SE-repo quality_data_score.py:82
        "models.trust_remote_code": True,                            # SE-repo quality_data_score.py:72
        "generate.model": "meta-llama/Meta-Llama-3-70B-Instruct",    # SE-repo rewrite_ed_prompt.py:35, readme.md:16
        "judge_quality.model": "meta-llama/Meta-Llama-3-70B-Instruct",  # SE-repo data_evaluation.py:25
    }, "synth-empathy")


def test_synth_empathy_generation_and_selection(se):
    _check(se, {
        "generate.prompt_variant": 2,           # Table 2 "ours": Prompt2
        "generate.num_seeds": 1.0,              # all of ED train (a fraction: 1 would be one seed)
        "generate.completions_per_seed": 5,     # rewrite_ed_prompt.py:88
        "generate.temperature": 0.8,            # rewrite_ed_prompt.py:63
        "generate.top_p": 0.9,
        "generate.max_new_tokens": 300,
        "generate.max_response_words": 30,      # Figure 6
        "discriminate.temperature": 0.8,        # quality_data_score.py:53
        "discriminate.top_p": 0.9,
        "discriminate.max_new_tokens": 128,
        "quality.threshold": 60,                # §4.2 "S greater than 60"
        "diversity.k": None,
        "diversity.ratio": 0.9,                 # kcentergreedy.py:178
        "train_discriminator.max_samples": None,
        "train_synth.max_samples": None,
        "judge_quality.sample_size": None,
    }, "synth-empathy")


# ---- Efficient-Empathy ----------------------------------------------------------------------

def test_efficient_empathy_models_and_judge(ee):
    _check(ee, {
        "profile": "efficient-empathy",
        "models.efficient_base": "meta-llama/Meta-Llama-3-8B-Instruct",  # EE §4.1, Table 1 MoE = Table 6 Llama block
        "models.trust_remote_code": False,
        "rate.model": "meta-llama/Meta-Llama-3-70B-Instruct",            # open judge in place of ChatGPT (§3.2)
        "rate.max_samples": None,
        "rate.import_file": None,
        "split.threshold": 5,                   # Table 2 "59%" = Table 3 Threshold-5; split_sensible_rational.py:74
        "train_expert.max_samples": None,
        "train_router.max_samples": None,
    }, "efficient-empathy")
    assert "qwen" not in ee["models.efficient_base"].lower(), "BTX cannot express Qwen1.5 (attention biases)"


def test_efficient_empathy_lora_and_training(ee):
    _check(ee, {
        "lora.r": 8, "lora.alpha": 32, "lora.dropout": 0.1,          # EE §5.1.2
        "lora.target_modules": LORA_TARGETS,                          # EE §5.1.2
        "train.max_steps": -1,
        "train.epochs": 1,                                            # sft_llama3.py:69
        "train.learning_rate": 0.0001,                                # sft_llama3.py:71
        "train.gradient_accumulation_steps": 1,                       # sft_llama3.py:67
        "train.max_length": 512,                                      # sft_llama3.py:31
        "train.bf16": True,                                           # sft_llama3.py:20
        "train.gradient_checkpointing": True,                         # sft_llama3.py:73, sft_llama3_moe.py:68
        "train.launcher": "accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml",  # EE §5.1.2 ZeRO-3
        "train_router.max_steps": -1,
        "train_router.learning_rate": 0.0001,                         # sft_llama3_moe.py:66
        "evaluate.max_new_tokens": 512,                               # test_response_llama3.py:64
    }, "efficient-empathy")


def test_efficient_empathy_global_batch_is_the_authors_16(ee):
    """sft_llama3.py:66-67: one process, per-device batch 16, no accumulation. Under ZeRO-3 the
    per-GPU batch times the launcher's processes times accumulation must give the same 16."""
    config = ee["train.launcher"].split("--config_file", 1)[1].split()[0]
    processes = yaml.safe_load((ROOT / config).read_text())["num_processes"]
    assert ee["train.batch_size"] * processes * ee["train.gradient_accumulation_steps"] == 16


# ---- shared by both ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", PAPER_PROFILES)
def test_paper_scale_evaluation_and_backend(name):
    _check(load_profile(name), {
        "llm.backend": "vllm",
        "prepare.source": "data/external/empatheticdialogues",
        "evaluate.max_samples": None,           # the whole ED test split
        "evaluate.bertscore": True,
        "evaluate.bertscore_model": "roberta-large",
        "evaluate.bertscore_num_layers": 17,
        "evaluate.bertscore_rescale": True,     # the papers' ~19 BERT-F1 scale
        "lora.r": 8, "lora.alpha": 32, "lora.dropout": 0.1, "lora.target_modules": LORA_TARGETS,
        "train.max_steps": -1,                  # no demo step cap
        "train.bf16": True,
    }, name)


def test_trust_remote_code_only_in_synth_empathy():
    on = [p.stem for p in sorted(PROFILES_DIR.glob("*.yaml"))
          if load_profile(p.stem).get("models.trust_remote_code") is True]
    assert on == ["synth-empathy"]
