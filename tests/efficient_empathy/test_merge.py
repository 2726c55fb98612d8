"""BTX merge and router training on the real SmolLM2-135M with quickly made random LoRA experts.

btx_merge streams tensor by tensor; the reference it is checked against is the in-memory merge it
replaced (peft merge_and_unload of each expert, the MoE built whole, then save_pretrained), kept here.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import TrainerCallback

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.data.ed import read_ed_csv
from empathy_pipeline.efficient_empathy.merge import btx_merge, mixtral_config
from empathy_pipeline.efficient_empathy.router import train_router
from empathy_pipeline.modeling.models import stabilise_saved_configs, torch_dtype

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _random_adapter(base_dir: Path, out: Path, seed: int, **lora) -> Path:
    """A LoRA adapter with random A and B (PEFT starts B at zero, which would change nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                           LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": LORA_TARGETS, **lora}))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    model.save_pretrained(out)
    return out


# ---- the reference: the whole-model merge btx_merge replaced -----------------------------------------

def _peft_expert(base_dir: Path, adapter_dir: Path | None):
    """The base model with its LoRA adapter merged by peft (merge_and_unload), in float32; None: the base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return model if adapter_dir is None else PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()


def _reference_moe(expert_s, expert_r, router_seed: int, dtype: torch.dtype):
    """MixtralForCausalLM assembled in memory from two whole dense experts (Eq. 6–8), weights in `dtype`."""
    from accelerate import init_empty_weights
    from transformers import MixtralForCausalLM

    config = mixtral_config(expert_s.config, dtype)
    sd_s, sd_r = expert_s.state_dict(), expert_r.state_dict()
    generator = torch.Generator().manual_seed(router_seed)
    state = {key: ((sd_s[key] + sd_r[key]) / 2).to(dtype) for key in sd_s if ".mlp." not in key}
    for i in range(config.num_hidden_layers):
        ffn = f"model.layers.{i}.mlp."
        w = [{p: sd[f"{ffn}{p}_proj.weight"] for p in ("gate", "up", "down")} for sd in (sd_s, sd_r)]
        state[f"{ffn}experts.gate_up_proj"] = torch.stack([torch.cat([e["gate"], e["up"]]) for e in w]).to(dtype)
        state[f"{ffn}experts.down_proj"] = torch.stack([e["down"] for e in w]).to(dtype)
        state[f"{ffn}gate.weight"] = torch.empty(2, config.hidden_size).normal_(
            0.0, config.initializer_range, generator=generator).to(dtype)
    if config.tie_word_embeddings:
        del state["lm_head.weight"]
    with init_empty_weights():
        moe = MixtralForCausalLM(config)
    missing, unexpected = moe.load_state_dict(state, strict=False, assign=True)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    if config.tie_word_embeddings:
        moe.tie_weights()
    return moe.eval()


def _reference_btx_merge(base_dir: Path, adapter_s: Path, adapter_r: Path | None, out: Path, router_seed: int,
                         dtype: str, **save_kwargs) -> None:
    from transformers import AutoTokenizer, GenerationConfig

    moe = _reference_moe(_peft_expert(base_dir, adapter_s), _peft_expert(base_dir, adapter_r), router_seed,
                         torch_dtype(dtype))
    try:
        moe.generation_config = GenerationConfig.from_pretrained(base_dir)
    except OSError:
        pass  # no generation_config.json: the one MixtralForCausalLM made from its config
    moe.save_pretrained(out, **save_kwargs)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    stabilise_saved_configs(out)


# ---- the streamed merge ----------------------------------------------------------------------------------

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


# The rationality expert replaced by the base model (EE Table 6 struc-(a)), in float32 and in shards:
# the other save_pretrained layout than moe_mixed's single bf16 file.
BASE_MERGE = {"router_seed": 3, "dtype": "float32", "max_shard_size": "200MB"}


@pytest.fixture(scope="module")
def moe_base(base_model_dir, adapters, tmp_path_factory):
    out = tmp_path_factory.mktemp("moe") / "base"
    report = btx_merge(base_model_dir, adapters[0], None, out, **BASE_MERGE)
    assert report["rationality_expert"] == "base"
    return out


def _tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            tensors.update({k: f.get_tensor(k) for k in f.keys()})
    return tensors


def _assert_same_checkpoint(streamed: Path, reference: Path) -> None:
    """The same files; every tensor of the same name, dtype and value; every file the same bytes."""
    files = sorted(p.name for p in reference.iterdir())
    assert files == sorted(p.name for p in streamed.iterdir())
    got, want = _tensors(streamed), _tensors(reference)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    for name in files:  # configs, index, tokenizer, and the safetensors bytes themselves
        assert (streamed / name).read_bytes() == (reference / name).read_bytes(), name


def _rounded_to_bf16(model):
    """`model` with its weights rounded to bfloat16 (still float32), as a bf16 checkpoint holds them."""
    with torch.no_grad():  # parameters only: not the RoPE buffer
        for param in model.parameters():
            param.copy_(param.to(torch.bfloat16))
    return model


IDS = torch.tensor([[1, 504, 3458, 314, 253, 1345, 30, 216, 3243, 28, 2]])


@pytest.mark.slow
def test_identical_experts_give_the_dense_model(base_model_dir, adapters, moe_same):
    """Eq. 6 with FF_s = FF_r is FF whatever the router says; Eq. 8 averages x with x: the MoE is the dense expert."""
    from transformers import AutoModelForCausalLM

    dense = _rounded_to_bf16(_peft_expert(base_model_dir, adapters[0])).to(torch.float64)  # the saved MoE is bf16
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
    s = _peft_expert(base_model_dir, adapters[0]).state_dict()
    r = _peft_expert(base_model_dir, adapters[1]).state_dict()
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
def test_base_model_in_the_rationality_experts_place(base_model_dir, adapters, moe_base):
    """EE Table 6 struc-(a): expert 1 holds the base model's own FFN, the rest averages M_s and the base."""
    s = _peft_expert(base_model_dir, adapters[0]).state_dict()
    base = _peft_expert(base_model_dir, None).state_dict()
    saved = _tensors(moe_base)  # float32: the merge itself, no rounding
    assert len(list(moe_base.glob("model-*-of-*.safetensors"))) > 1
    layer = "model.layers.3"
    assert torch.equal(saved[f"{layer}.block_sparse_moe.experts.1.w1.weight"], base[f"{layer}.mlp.gate_proj.weight"])
    assert torch.equal(saved[f"{layer}.block_sparse_moe.experts.0.w1.weight"], s[f"{layer}.mlp.gate_proj.weight"])
    name = f"{layer}.self_attn.q_proj.weight"
    assert torch.equal(saved[name], (s[name] + base[name]) / 2)


@pytest.mark.slow
@pytest.mark.parametrize("merged, adapter_r, merge", [
    ("moe_mixed", 1, {"router_seed": 0, "dtype": "bfloat16"}),  # save_pretrained's single file
    ("moe_base", None, BASE_MERGE),  # its shards and index
])
def test_streamed_merge_is_the_whole_model_merge_to_the_bit(base_model_dir, adapters, merged, adapter_r, merge,
                                                             request, tmp_path):
    """The streamed checkpoint is the one the in-memory merge saves: every file, every tensor, the same tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    streamed, reference = request.getfixturevalue(merged), tmp_path / "reference"
    _reference_btx_merge(base_model_dir, adapters[0], None if adapter_r is None else adapters[adapter_r],
                         reference, **merge)
    _assert_same_checkpoint(streamed, reference)

    tokenizer = AutoTokenizer.from_pretrained(streamed)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "I lost my job today."}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    tokens = []
    for model_dir in (streamed, reference):
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        assert type(model).__name__ == "MixtralForCausalLM"
        tokens.append(model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1]:])
    assert torch.equal(tokens[0], tokens[1]) and len(tokens[0]) > 0


@pytest.mark.slow
def test_moe_block_is_eq6_of_two_different_experts(base_model_dir, adapters, moe_mixed):
    """One layer of the merged MoE computes Router·FF_s(x) + (1 − Router)·FF_r(x) (Eq. 6) for two different experts.

    With identical experts routing cannot matter; here FF_s and FF_r differ, so putting the experts
    in the wrong slots, or routing top-1 instead of softly over both, gives a different output.
    """
    from transformers import AutoModelForCausalLM
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    # The saved MoE is bf16, computed here in float32: the dense experts get the same rounding.
    expert_s, expert_r = (_rounded_to_bf16(_peft_expert(base_model_dir, adapter)) for adapter in adapters)
    moe = AutoModelForCausalLM.from_pretrained(moe_mixed, dtype=torch.float32)
    layer = 7
    block = moe.model.layers[layer].mlp
    assert isinstance(block, MixtralSparseMoeBlock)
    x = torch.randn(2, 5, moe.config.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ff_s, ff_r = expert_s.model.layers[layer].mlp(x), expert_r.model.layers[layer].mlp(x)
        p = torch.softmax(x @ block.gate.weight.T, dim=-1)  # (…, 2) over experts s, r (Eq. 7, no bias)
        router = p[..., :1]
        by_hand = router * ff_s + (1 - router) * ff_r  # Eq. 6
        swapped = router * ff_r + (1 - router) * ff_s
        out = block(x)
        top1_config = copy.deepcopy(moe.config)
        top1_config.num_experts_per_tok = 1
        top1 = MixtralSparseMoeBlock(top1_config)
        top1.load_state_dict(block.state_dict())
        out_top1 = top1(x)

    # Float32 rounding, relative to the output's scale. Measured: block vs hand 2.5e-7; experts
    # swapped 3.2e-2, top-1 4.1e-2; FF_s − FF_r 9.4e-2; Router(x) spans 0.36–0.81.
    tol = 1e-5 * by_hand.abs().max().item()
    assert (ff_s - ff_r).abs().max() > 1000 * tol  # the experts really differ at this layer
    assert (p[..., 0] - 0.5).abs().max() > 0.1  # and the router does not sit at 1/2 everywhere
    assert (out - by_hand).abs().max().item() <= tol
    # The checks this test exists for: each of these bugs would fail the equality above.
    assert (out - swapped).abs().max().item() > 100 * tol  # experts in the wrong slots
    assert (out_top1 - by_hand).abs().max().item() > 100 * tol  # top-1 routing instead of Eq. 6's soft mix
    chosen = torch.where((p[..., 0] >= p[..., 1])[..., None], ff_s, ff_r)
    assert (out_top1 - chosen).abs().max().item() <= tol  # (top-1 is the argmax expert's FFN alone)


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


def _half_bf16_ulp(w: torch.Tensor) -> torch.Tensor:
    """Half the spacing of bfloat16 numbers at w: a step smaller than this rounds away in a bf16 weight."""
    _, exponent = torch.frexp(w.to(torch.bfloat16).float())  # w = m * 2^e, 0.5 <= |m| < 1; 8 significant bits
    return torch.ldexp(torch.ones_like(w), exponent - 9)


def _layer(item) -> int:
    return int((item if isinstance(item, str) else item[0]).split(".")[2])  # model.layers.<i>....


class _RouterRecorder(TrainerCallback):
    """Router weights (as trained, before the final cast), gradients and AdamW state dtypes per step."""

    def __init__(self):
        self.weights, self.grads, self.state_dtypes = [], [], set()

    def _routers(self, model, grad=False):
        named = sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=_layer)
        return torch.cat([(p.grad if grad else p).detach().flatten().clone() for _, p in named])

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.frozen_dtypes = {p.dtype for p in model.parameters() if not p.requires_grad}
        self.router_dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
        self.weights.append(self._routers(model))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append(self._routers(model, grad=True))  # after clipping, what AdamW receives

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.weights.append(self._routers(model))
        for param_state in optimizer.state.values():
            self.state_dtypes |= {v.dtype for v in param_state.values() if torch.is_tensor(v) and v.ndim}


BF16_ROUTER_CFG = {"max_steps": 3, "epochs": 1, "learning_rate": 1e-4, "batch_size": 2,
                   "gradient_accumulation_steps": 1, "max_length": 64, "bf16": True, "logging_steps": 1, "seed": 0}


@pytest.fixture(scope="module")
def router_samples(ed_dir):
    samples, _ = read_ed_csv(ed_dir / "train.csv", "train", max_conversations=3)
    return samples.head(4)


@pytest.fixture(scope="module")
def bf16_router_run(moe_mixed, router_samples, tmp_path_factory):
    """Routers of moe_mixed (stored bf16) trained 3 steps at lr 1e-4 with train.bf16, recorded per step."""
    out = tmp_path_factory.mktemp("router-bf16")
    recorder = _RouterRecorder()
    report = train_router(moe_mixed, router_samples, BF16_ROUTER_CFG, out / "moe", out / "router.csv",
                          callbacks=[recorder])
    return out / "moe", report, recorder


@pytest.mark.slow
def test_router_training_in_bf16_keeps_float32_master_weights(moe_mixed, bf16_router_run):
    """train.bf16: frozen MoE in bf16, routers and AdamW state in float32, so steps below bf16 rounding count."""
    out, report, recorder = bf16_router_run
    lr = BF16_ROUTER_CFG["learning_rate"]
    assert report["steps"] == BF16_ROUTER_CFG["max_steps"]
    assert recorder.frozen_dtypes == {torch.bfloat16}  # the frozen 200M weights stay bf16 on CPU too
    assert recorder.router_dtypes == {torch.float32} and recorder.state_dtypes == {torch.float32}

    w = recorder.weights  # float32 router weights before step 1 and after each step
    w0, half_ulp = w[0], _half_bf16_ulp(w[0])
    assert torch.equal(w0, w0.to(torch.bfloat16).float())  # started from the bf16 checkpoint's values
    # Adam's first step is lr * sign(g): every router weight moved, and where |w| > 2^-5 that step
    # is below half a bf16 ulp (measured: 11.8% of the 34,560 weights), so a bf16 weight would not have moved.
    assert (w[1] != w0).all()
    rounds_away = w[1].to(torch.bfloat16).float() == w0
    assert rounds_away.float().mean() > 0.05
    # The failure mode, replayed: one plain AdamW step with the same gradient on the same weights.
    # In float32 it reproduces the Trainer's step; in bf16 exactly those sub-rounding steps vanish.
    # (Measured with routers trained in bf16 through train_router itself: after these 3 steps 12.3%
    # of the weights had never moved and the median weight was 24% off its float32 trajectory.)
    replayed = {}
    for dtype in (torch.float32, torch.bfloat16):
        param = torch.nn.Parameter(w0.to(dtype, copy=True))
        param.grad = recorder.grads[0].to(dtype)
        torch.optim.AdamW([param], lr=lr, weight_decay=0.0).step()
        replayed[dtype] = param.detach().float()
    assert (replayed[torch.float32] - w[1]).abs().max() < 1e-8
    bf16_unmoved = replayed[torch.bfloat16] == w0
    assert torch.equal(bf16_unmoved, rounds_away)
    # Over the run the float32 weights moved by more than bf16 rounding (measured: median change
    # 1.6e-4 against a median half-ulp of 3.1e-5).
    total = (w[-1] - w0).abs()
    assert total.median() > 2 * half_ulp.median()

    before, after = _tensors(moe_mixed), _tensors(out)
    routers = sorted((k for k in before if k.endswith("block_sparse_moe.gate.weight")), key=_layer)
    assert all(t.dtype == torch.bfloat16 for t in after.values())
    assert all(torch.equal(before[k], after[k]) for k in before.keys() - set(routers))
    saved = torch.cat([after[k].flatten() for k in routers])
    assert torch.equal(saved, w[-1].to(torch.bfloat16))  # the float32 result, rounded once at the save
    assert (saved != torch.cat([before[k].flatten() for k in routers])).float().mean() > 0.5  # measured 0.87


class _Killed(Exception):
    pass


class _KillAtSave(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):  # the checkpoint of this step is on disk
        if state.global_step == self.step:
            raise _Killed


@pytest.mark.slow
def test_killed_router_training_resumes_with_its_routers(moe_mixed, router_samples, bf16_router_run, tmp_path):
    """A resumed run ends bit-identical to an uninterrupted one (the Trainer alone would restart the routers)."""
    out, cfg = tmp_path / "moe", {**BF16_ROUTER_CFG, "save_steps": 1}  # a checkpoint every step
    with pytest.raises(_Killed):
        train_router(moe_mixed, router_samples, cfg, out, tmp_path / "router.csv", callbacks=[_KillAtSave(2)])
    assert not out.exists()
    resumed = train_router(moe_mixed, router_samples, cfg, out, tmp_path / "router.csv")
    straight_out, straight, _ = bf16_router_run
    assert resumed["steps"] == straight["steps"] == 3 and resumed["final_loss"] == straight["final_loss"]
    a, b = _tensors(out), _tensors(straight_out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.block_sparse_moe.gate.weight"],
                           _tensors(moe_mixed)["model.layers.0.block_sparse_moe.gate.weight"])


def _tiny_dense(model_type: str, **fields):
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 1}
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **{**shape, **fields}))


@pytest.fixture
def tiny_llama(base_model_dir, tmp_path) -> Path:
    """A one-layer Llama with untied lm_head (as Llama-3-8B), a tokenizer and no generation_config.json."""
    from transformers import AutoTokenizer

    out = tmp_path / "tiny"
    _tiny_dense("llama", hidden_act="gelu").save_pretrained(out)
    (out / "generation_config.json").unlink()  # Mixtral's generation defaults then apply
    AutoTokenizer.from_pretrained(base_model_dir).save_pretrained(out)  # any tokenizer: the merge copies it
    return out


@pytest.mark.parametrize("model_type, fields, named", [
    ("llama", {"attention_bias": True}, "attention_bias"),
    ("llama", {"mlp_bias": True}, "mlp_bias"),
    ("qwen2", {}, "model_type 'qwen2'"),  # q/k/v biases: no place in Mixtral
])
def test_inexpressible_architecture_is_a_clear_error(model_type, fields, named, tmp_path):
    _tiny_dense(model_type, **fields).save_pretrained(tmp_path / "base")
    with pytest.raises(PipelineError, match=named):
        btx_merge(tmp_path / "base", None, None, tmp_path / "moe", router_seed=0)
    assert not (tmp_path / "moe").exists()


def test_tiny_llama_merges_with_its_activation(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    btx_merge(tiny_llama, None, None, tmp_path / "moe", router_seed=0, dtype="float32")
    moe, dense = (AutoModelForCausalLM.from_pretrained(d) for d in (tmp_path / "moe", tiny_llama))
    assert moe.config.hidden_act == "gelu"
    with torch.no_grad():
        ids = torch.tensor([[1, 5, 9, 3]])
        assert (moe(ids).logits - dense(ids).logits).abs().max().item() <= 1e-5


def _to_bf16_adapter(adapter_dir: Path) -> Path:
    """The adapter with its weights stored in bfloat16 (peft loads them into float32 LoRA layers)."""
    from safetensors.torch import load_file, save_file

    path = adapter_dir / "adapter_model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(path).items()}, path, metadata={"format": "pt"})
    return adapter_dir


def test_untied_llama_with_other_lora_settings_streams_to_the_whole_model_merge(tiny_llama, tmp_path):
    """lm_head averaged and saved; rsLoRA scaling, a subset of projections, bf16 adapter weights; shards in and out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a0 = _random_adapter(tiny_llama, tmp_path / "a0", 0)
    a1 = _to_bf16_adapter(_random_adapter(tiny_llama, tmp_path / "a1", 1, r=2, lora_alpha=16, use_rslora=True,
                                          target_modules=["q_proj", "down_proj"]))
    sharded = tmp_path / "tiny-sharded"  # the same model as shards with an index
    AutoModelForCausalLM.from_pretrained(tiny_llama).save_pretrained(sharded, max_shard_size="4KB")
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(sharded)
    (sharded / "generation_config.json").unlink()
    assert (sharded / "model.safetensors.index.json").exists()
    for base, shards in ((tiny_llama, "1GB"), (sharded, "4KB")):
        merge = {"router_seed": 5, "dtype": "bfloat16", "max_shard_size": shards}
        btx_merge(base, a0, a1, tmp_path / shards / "moe", **merge)
        _reference_btx_merge(base, a0, a1, tmp_path / shards / "reference", **merge)
        _assert_same_checkpoint(tmp_path / shards / "moe", tmp_path / shards / "reference")
    assert "lm_head.weight" in _tensors(tmp_path / "1GB" / "moe")
    assert (tmp_path / "4KB" / "moe" / "model.safetensors.index.json").exists()


def _empty_dir(tiny: Path, tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _other_base_adapter(tiny: Path, tmp: Path) -> Path:
    _tiny_dense("llama", intermediate_size=48).save_pretrained(tmp / "other")
    return _random_adapter(tmp / "other", tmp / "other-adapter", 0)


def _dora_adapter(tiny: Path, tmp: Path) -> Path:
    return _random_adapter(tiny, tmp / "dora", 0, use_dora=True)


def _no_weights(tiny: Path, tmp: Path) -> None:
    (tiny / "model.safetensors").unlink()


def _extra_bias(tiny: Path, tmp: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(tiny / "model.safetensors")
    save_file({**weights, "model.layers.0.self_attn.q_proj.bias": torch.zeros(16)}, tiny / "model.safetensors")


@pytest.mark.parametrize("breakage, named", [
    (_empty_dir, "not a PEFT adapter directory"),
    (_other_base_adapter, r"mlp\.down_proj: LoRA r=4 update .* \(not an adapter of this base model\)"),
    (_dora_adapter, "cannot apply adapter to .*: use_dora=True is not supported"),
    (_no_weights, "cannot load model from .*: no model.safetensors"),
    (_extra_bias, "weights without a Mixtral place: model.layers.0.self_attn.q_proj.bias"),
])
def test_unmergeable_inputs_are_one_line_errors(tiny_llama, tmp_path, breakage, named):
    adapter = breakage(tiny_llama, tmp_path)
    with pytest.raises(PipelineError, match=named) as raised:
        btx_merge(tiny_llama, adapter, None, tmp_path / "moe", router_seed=0)
    assert "\n" not in str(raised.value) and not (tmp_path / "moe").exists()
