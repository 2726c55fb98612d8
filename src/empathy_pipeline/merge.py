"""Efficient-Empathy §4.2–4.3: mix the sensibility and rationality experts into one MoE (BTX).

btx_merge builds the paper's empathetic MoE as a plain transformers Mixtral checkpoint:
- each layer's FFN becomes an MoE layer whose two experts are the FFNs of M_s and M_r;
- the router of each layer is new and random (seeded); with 2 experts and 2 experts per token,
  Mixtral's router is exactly the paper's soft router: softmax over both experts, then the
  weighted sum Router·FF_s + (1 − Router)·FF_r (Eq. 6–7; Mixtral's router has no bias b_i);
- every other weight (attention, norms, embeddings, lm_head) is the average of the experts (Eq. 8).
An expert is the base model with its LoRA adapter merged in (peft merge_and_unload).

training.train_router then trains only the routers on the entire training set, all else frozen (§5.1.3).
The result loads with AutoModelForCausalLM.from_pretrained, no custom code.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .errors import PipelineError
from .io import atomic_path
from .models import stabilise_saved_configs, torch_dtype
from .training import ROUTER_SUFFIX

# Dense architectures whose layers Mixtral reproduces exactly (same attention, RMSNorm, gated FFN).
SUPPORTED_MODEL_TYPES = ("llama", "mistral")
# Config fields of those architectures that Mixtral has no equivalent for: field -> allowed value.
INEXPRESSIBLE_FIELDS = {"attention_bias": False, "mlp_bias": False}
FFN_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
NUM_EXPERTS = 2  # expert 0 = sensibility, expert 1 = rationality


# ---- building the MoE -------------------------------------------------------------------------------

def load_expert(base_dir: str | Path, adapter_dir: str | Path | None):
    """The base model with the LoRA adapter at adapter_dir merged in, in float32 on CPU.

    adapter_dir None gives the base model itself: the expert of Efficient-Empathy Table 6 struc-(a),
    where the base model takes the rationality expert's place.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if adapter_dir is not None and not (Path(adapter_dir) / "adapter_config.json").exists():
        raise PipelineError(f"{adapter_dir}: not a PEFT adapter directory (no adapter_config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    except OSError as exc:
        raise PipelineError(f"cannot load model from {base_dir}: {str(exc).splitlines()[0]}") from None
    if adapter_dir is None:
        return model
    try:
        return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as exc:
        raise PipelineError(f"{adapter_dir}: cannot apply adapter to {base_dir}: {str(exc).splitlines()[0]}") from None


def mixtral_config(dense_config, dtype: torch.dtype):
    """MixtralConfig with the dense model's shape, 2 experts and both active per token."""
    from transformers import MixtralConfig

    where = f"{getattr(dense_config, 'name_or_path', '') or 'expert'} config"
    for field, allowed in INEXPRESSIBLE_FIELDS.items():
        if getattr(dense_config, field, allowed) != allowed:
            raise PipelineError(f"{where}: {field}={getattr(dense_config, field)!r} has no Mixtral equivalent; "
                                "BTX merge needs a bias-free Llama/Mistral-style model")
    if dense_config.model_type not in SUPPORTED_MODEL_TYPES:
        raise PipelineError(f"{where}: model_type {dense_config.model_type!r} cannot be expressed as Mixtral "
                            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    # Mistral may use a sliding window (Mixtral has the same one); Llama has none.
    sliding_window = getattr(dense_config, "sliding_window", None)
    config = MixtralConfig(
        vocab_size=dense_config.vocab_size,
        hidden_size=dense_config.hidden_size,
        intermediate_size=dense_config.intermediate_size,
        num_hidden_layers=dense_config.num_hidden_layers,
        num_attention_heads=dense_config.num_attention_heads,
        num_key_value_heads=dense_config.num_key_value_heads,
        head_dim=getattr(dense_config, "head_dim", None),
        hidden_act=dense_config.hidden_act,
        max_position_embeddings=dense_config.max_position_embeddings,
        initializer_range=dense_config.initializer_range,
        rms_norm_eps=dense_config.rms_norm_eps,
        rope_parameters=dict(dense_config.rope_parameters),
        attention_dropout=getattr(dense_config, "attention_dropout", 0.0),
        sliding_window=sliding_window,
        tie_word_embeddings=dense_config.tie_word_embeddings,
        bos_token_id=dense_config.bos_token_id,
        eos_token_id=dense_config.eos_token_id,
        pad_token_id=dense_config.pad_token_id,
        num_local_experts=NUM_EXPERTS,
        num_experts_per_tok=NUM_EXPERTS,  # top-2 of 2 = dense soft routing, as in Eq. 6
        output_router_logits=False,  # no load-balancing loss: the paper trains on NLL only (Eq. 10)
        router_jitter_noise=0.0,
    )
    config.architectures = ["MixtralForCausalLM"]
    config.dtype = dtype
    return config


def moe_state_dict(expert_s, expert_r, config, router_seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Mixtral weights (transformers 5 in-memory layout) from two dense experts.

    Per layer i: mlp.experts.gate_up_proj[e] = cat(gate_proj, up_proj), mlp.experts.down_proj[e] =
    down_proj, for e = 0 (sensibility), 1 (rationality); mlp.gate.weight = new router ~ N(0,
    initializer_range) from router_seed. Everything else: (W_s + W_r) / 2, computed in float32.
    """
    sd_s, sd_r = expert_s.state_dict(), expert_r.state_dict()
    if sd_s.keys() != sd_r.keys():
        raise PipelineError("the two experts have different weights (not adapters of the same base model)")
    generator = torch.Generator().manual_seed(int(router_seed))
    out: dict[str, torch.Tensor] = {}
    for i in range(config.num_hidden_layers):
        ffn = f"model.layers.{i}.mlp."
        w = {e: {p: sd[f"{ffn}{p}.weight"].float() for p in FFN_PROJECTIONS} for e, sd in enumerate((sd_s, sd_r))}
        out[f"{ffn}experts.gate_up_proj"] = torch.stack(
            [torch.cat([w[e]["gate_proj"], w[e]["up_proj"]], dim=0) for e in range(NUM_EXPERTS)]).to(dtype)
        out[f"{ffn}experts.down_proj"] = torch.stack([w[e]["down_proj"] for e in range(NUM_EXPERTS)]).to(dtype)
        router = torch.empty(NUM_EXPERTS, config.hidden_size).normal_(0.0, config.initializer_range,
                                                                       generator=generator)
        out[f"{ffn}gate.weight"] = router.to(dtype)
    ffn_keys = {f"model.layers.{i}.mlp.{p}.weight" for i in range(config.num_hidden_layers) for p in FFN_PROJECTIONS}
    for key in sd_s.keys() - ffn_keys:
        out[key] = ((sd_s[key].float() + sd_r[key].float()) / 2).to(dtype)
    return out


def build_moe(expert_s, expert_r, router_seed: int, dtype: torch.dtype = torch.float32):
    """MixtralForCausalLM made from two dense experts (see moe_state_dict); weights in `dtype`."""
    from accelerate import init_empty_weights
    from transformers import MixtralForCausalLM

    config = mixtral_config(expert_s.config, dtype)
    state = moe_state_dict(expert_s, expert_r, config, router_seed, dtype)
    with init_empty_weights():  # parameters on "meta": no time spent on a random init we overwrite
        moe = MixtralForCausalLM(config)
    expected = set(moe.state_dict())
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
        expected.discard("lm_head.weight")
    unmapped, unfilled = sorted(state.keys() - expected), sorted(expected - state.keys())
    if unmapped or unfilled:
        # e.g. q_proj.bias or q_norm of an architecture whose weights Mixtral has no place for
        raise PipelineError(f"{expert_s.config.model_type} expert: weights without a Mixtral place: "
                            f"{', '.join(unmapped[:3]) or 'none'}; Mixtral weights not filled: "
                            f"{', '.join(unfilled[:3]) or 'none'}")
    moe.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        moe.tie_weights()
    return moe.eval()


def btx_merge(base_dir: str | Path, expert_s_dir: str | Path, expert_r_dir: str | Path | None,
              out_dir: str | Path, router_seed: int, dtype: str = "bfloat16") -> dict:
    """Merge the sensibility and rationality LoRA experts of base_dir into a Mixtral MoE at out_dir.

    expert_r_dir None puts the base model in the rationality expert's place (EE Table 6 struc-(a)).

    Writes safetensors in `dtype` (bfloat16 by default), config, generation config and the base
    model's tokenizer with its chat template. Returns a report for the stage log.
    """
    from transformers import AutoTokenizer, GenerationConfig

    started = time.time()
    expert_s = load_expert(base_dir, expert_s_dir)
    expert_r = load_expert(base_dir, expert_r_dir)
    moe = build_moe(expert_s, expert_r, router_seed, torch_dtype(dtype))
    del expert_s, expert_r
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    try:
        moe.generation_config = GenerationConfig.from_pretrained(str(base_dir))
    except OSError:
        pass  # the base has no generation_config.json: Mixtral's defaults from the config apply
    with atomic_path(out_dir) as tmp:
        moe.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        stabilise_saved_configs(tmp)
    n_router = sum(p.numel() for name, p in moe.named_parameters() if name.endswith(ROUTER_SUFFIX))
    return {
        "parameters": sum(p.numel() for p in moe.parameters()),
        "router_parameters": n_router,
        "layers": moe.config.num_hidden_layers,
        "experts": NUM_EXPERTS,
        "rationality_expert": "base" if expert_r_dir is None else str(expert_r_dir),
        "dtype": dtype,
        "seconds": round(time.time() - started, 1),
    }
