"""BTX merge and router training on the real SmolLM2-135M with quickly made random LoRA experts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from empathy_pipeline.ed import read_ed_csv
from empathy_pipeline.errors import PipelineError
from empathy_pipeline.merge import btx_merge, build_moe, load_expert, train_router

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _random_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random A and B (PEFT starts B at zero, which would change nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(base_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return _random_adapter(base_model_dir, root / "a0", 0), _random_adapter(base_model_dir, root / "a1", 1)


@pytest.fixture(scope="module")
def moe_same(base_model_dir, adapters, tmp_path_factory):
    out = tmp_path_factory.mktemp("moe") / "same"
    btx_merge(base_model_dir, adapters[0], adapters[0], out, router_seed=0)
    return out


@pytest.fixture(scope="module")
def moe_mixed(base_model_dir, adapters, tmp_path_factory):
    out = tmp_path_factory.mktemp("moe") / "mixed"
    btx_merge(base_model_dir, adapters[0], adapters[1], out, router_seed=0)
    return out


def _tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


IDS = torch.tensor([[1, 504, 3458, 314, 253, 1345, 30, 216, 3243, 28, 2]])


@pytest.mark.slow
def test_identical_experts_give_the_dense_model(base_model_dir, adapters, moe_same):
    """Eq. 6 with FF_s = FF_r is FF whatever the router says; Eq. 8 averages x with x: the MoE is the dense expert."""
    from transformers import AutoModelForCausalLM

    dense = load_expert(base_model_dir, adapters[0])
    with torch.no_grad():  # the saved MoE is bf16: round the dense weights the same way (not the RoPE buffer)
        for param in dense.parameters():
            param.copy_(param.to(torch.bfloat16))
    dense = dense.to(torch.float64)
    # float64 so the comparison measures the merge, not float32 rounding amplified over 30 layers;
    # the grouped_mm kernel has no float64, the eager expert loop computes the same sum.
    moe = AutoModelForCausalLM.from_pretrained(moe_same, dtype=torch.float64, experts_implementation="eager")
    base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float64)
    with torch.no_grad():
        dense_logits, moe_logits, base_logits = dense(IDS).logits, moe(IDS).logits, base(IDS).logits
    assert (moe_logits - dense_logits).abs().max().item() <= 1e-4
    assert (dense_logits - base_logits).abs().max().item() > 0.1  # the adapter really changed the model


@pytest.mark.slow
def test_merged_weights_follow_the_paper(base_model_dir, adapters, moe_mixed):
    """Experts 0/1 hold the FFNs of M_s/M_r (w1=gate, w2=down, w3=up); other weights are their average."""
    s = load_expert(base_model_dir, adapters[0]).state_dict()
    r = load_expert(base_model_dir, adapters[1]).state_dict()
    saved = _tensors(moe_mixed)
    layer = "model.layers.7"
    for e, expert in enumerate((s, r)):
        for w, proj in (("w1", "gate_proj"), ("w2", "down_proj"), ("w3", "up_proj")):
            on_disk = saved[f"{layer}.block_sparse_moe.experts.{e}.{w}.weight"]
            assert on_disk.dtype == torch.bfloat16
            assert torch.equal(on_disk, expert[f"{layer}.mlp.{proj}.weight"].to(torch.bfloat16))
    for name in (f"{layer}.self_attn.q_proj.weight", f"{layer}.input_layernorm.weight", "model.embed_tokens.weight"):
        assert torch.equal(saved[name], ((s[name] + r[name]) / 2).to(torch.bfloat16))
    assert not torch.equal(s[f"{layer}.self_attn.q_proj.weight"], r[f"{layer}.self_attn.q_proj.weight"])
    assert saved[f"{layer}.block_sparse_moe.gate.weight"].shape == (2, 576)


@pytest.mark.slow
def test_saved_moe_is_mixtral_and_generates_in_a_fresh_process(base_model_dir, moe_same):
    config = json.loads((moe_same / "config.json").read_text())
    base = json.loads((Path(base_model_dir) / "config.json").read_text())
    assert config["architectures"] == ["MixtralForCausalLM"] and config["model_type"] == "mixtral"
    assert config["num_local_experts"] == 2 and config["num_experts_per_tok"] == 2
    for key in ("rope_parameters", "rms_norm_eps", "tie_word_embeddings", "head_dim", "max_position_embeddings",
                "bos_token_id", "eos_token_id", "pad_token_id", "num_key_value_heads"):
        assert config[key] == base[key], key
    assert config["sliding_window"] is None
    script = (
        "import sys; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"d = {str(moe_same)!r}\n"
        "tok = AutoTokenizer.from_pretrained(d); model = AutoModelForCausalLM.from_pretrained(d)\n"
        "assert type(model).__name__ == 'MixtralForCausalLM'\n"
        "ids = tok.apply_chat_template([{'role': 'user', 'content': 'I lost my job today.'}],"
        " add_generation_prompt=True, return_tensors='pt', return_dict=True)\n"
        "out = model.generate(**ids, max_new_tokens=8, do_sample=False)\n"
        "print('NEW_TOKENS', out.shape[1] - ids['input_ids'].shape[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split("NEW_TOKENS")[1].split()[0]) > 0


@pytest.mark.slow
def test_router_training_changes_only_the_routers(moe_mixed, ed_dir, tmp_path):
    samples, _ = read_ed_csv(ed_dir / "train.csv", "train", max_conversations=3)
    train_cfg = {"max_steps": 2, "epochs": 1, "learning_rate": 0.01, "batch_size": 2,
                 "gradient_accumulation_steps": 1, "max_length": 64, "bf16": False, "logging_steps": 1, "seed": 0}
    out, loss_csv = tmp_path / "moe", tmp_path / "router.csv"
    report = train_router(moe_mixed, samples.head(4), train_cfg, out, loss_csv)
    assert report["steps"] == 2 and report["routers"] == 30
    before, after = _tensors(moe_mixed), _tensors(out)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    routers = {k for k in before if k.endswith("block_sparse_moe.gate.weight")}
    assert changed == routers  # every router moved, nothing else did (expert gate projections included)
    assert all(t.dtype == torch.bfloat16 for t in after.values())
    assert len(loss_csv.read_text().splitlines()) == 3  # header + one loss per step


def _tiny_dense(model_type: str, **fields):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=64, hidden_size=16, intermediate_size=32,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, **fields)
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("model_type, fields, named", [
    ("llama", {"attention_bias": True}, "attention_bias"),
    ("llama", {"mlp_bias": True}, "mlp_bias"),
    ("qwen2", {}, "model_type 'qwen2'"),  # q/k/v biases: no place in Mixtral
])
def test_inexpressible_architecture_is_a_clear_error(model_type, fields, named):
    model = _tiny_dense(model_type, **fields)
    with pytest.raises(PipelineError, match=named):
        build_moe(model, model, router_seed=0)


def test_tiny_llama_merges_with_its_activation():
    model = _tiny_dense("llama", hidden_act="gelu")
    moe = build_moe(model, model, router_seed=0)
    assert moe.config.hidden_act == "gelu" and not any(p.is_meta for p in moe.parameters())
    with torch.no_grad():
        ids = torch.tensor([[1, 5, 9, 3]])
        assert (moe(ids).logits - model(ids).logits).abs().max().item() <= 1e-5
