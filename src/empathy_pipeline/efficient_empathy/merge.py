"""Efficient-Empathy §4.2–4.3: mix the sensibility and rationality experts into one MoE (BTX).

btx_merge builds the paper's empathetic MoE as a plain transformers Mixtral checkpoint:
- each layer's FFN becomes an MoE layer whose two experts are the FFNs of M_s and M_r;
- the router of each layer is new and random (seeded); with 2 experts and 2 experts per token,
  Mixtral's router is exactly the paper's soft router: softmax over both experts, then the
  weighted sum Router·FF_s + (1 − Router)·FF_r (Eq. 6–7; Mixtral's router has no bias b_i);
- every other weight (attention, norms, embeddings, lm_head) is the average of the experts (Eq. 8).
An expert is the base model with its LoRA adapter merged in, W + (B @ A)·scaling as peft's merge.

The merge streams: it reads the base checkpoint one tensor at a time, merges the LoRA updates into
that tensor alone and writes the output shard by shard. It holds one shard (MAX_SHARD_SIZE) and the
float32 copies of one tensor, not two float32 models: about 6 GiB for two Llama-3-8B experts
(docs/gpu.md, benchmarks/bench_btx_memory.py).

router.train_router then trains only the routers on the entire training set, all else frozen (§5.1.3).
The result loads with AutoModelForCausalLM.from_pretrained, no custom code.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import atomic_path
from empathy_pipeline.modeling.models import stabilise_saved_configs, torch_dtype

# Dense architectures whose layers Mixtral reproduces exactly (same attention, RMSNorm, gated FFN).
SUPPORTED_MODEL_TYPES = ("llama", "mistral")
# Config fields of those architectures that Mixtral has no equivalent for: field -> allowed value.
INEXPRESSIBLE_FIELDS = {"attention_bias": False, "mlp_bias": False}
NUM_EXPERTS = 2  # expert 0 = sensibility, expert 1 = rationality
# The saved names of a layer's router and expert FFNs (see saved_layout), and the dense projection
# each expert weight is: Mixtral's w1/w2/w3 are Llama's gate_proj/down_proj/up_proj.
ROUTER_KEY = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.gate\.weight")
EXPERT_KEY = re.compile(r"model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight")
EXPERT_WEIGHT_SOURCES = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
# Shards are written whole (safetensors writes a file from tensors in memory), so this bounds the
# output held in RAM; save_pretrained's own default (50GB) would hold an 8B MoE entirely.
MAX_SHARD_SIZE = "2GB"
# peft LoRA options and variants whose merge is not W + (B @ A)·scaling with one scaling per adapter.
UNSUPPORTED_LORA_OPTIONS = ("fan_in_fan_out", "use_dora", "lora_bias", "rank_pattern", "alpha_pattern",
                            "layer_replication", "use_bdlora", "alora_invocation_tokens", "arrow_config",
                            "velora_config", "monteclora_config", "kasa_config")
PEFT_KEY_PREFIX = "base_model.model."  # peft's name for the wrapped model in a saved adapter


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


# ---- reading the base model and the adapters --------------------------------------------------------

class DenseCheckpoint:
    """A model directory's safetensors weights (one file or shards with their index), read a tensor at a time."""

    def __init__(self, model_dir: str | Path):
        from safetensors import safe_open
        from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

        model_dir = Path(model_dir)
        index, single = model_dir / SAFE_WEIGHTS_INDEX_NAME, model_dir / SAFE_WEIGHTS_NAME
        if index.is_file():
            paths = sorted({model_dir / name for name in json.loads(index.read_text())["weight_map"].values()})
        elif single.is_file():
            paths = [single]
        else:
            raise PipelineError(f"cannot load model from {model_dir}: no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}")
        self.files: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for path in paths:
            with safe_open(str(path), "pt") as f:  # reads the header only
                for key in f.keys():
                    self.files[key], self.shapes[key] = path, tuple(f.get_slice(key).get_shape())

    def float32(self, key: str) -> torch.Tensor:
        """The tensor `key` in float32, as from_pretrained(dtype=torch.float32) loads it."""
        from safetensors import safe_open

        # The file is mapped only while this tensor lives: a handle kept open would keep every page
        # read so far resident, the whole base model by the end.
        with safe_open(str(self.files[key]), "pt") as f:
            return f.get_tensor(key).float()


@dataclass(frozen=True)
class LoraUpdate:
    """One LoRA adapter: dense weight key -> (A, B) in float32, and the adapter's scaling."""

    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scaling: float

    def merged(self, key: str, weight: torch.Tensor) -> torch.Tensor:
        """weight + (B @ A)·scaling, the op order of peft's LoRA Linear.get_delta_weight and merge."""
        if key not in self.weights:
            return weight
        a, b = self.weights[key]
        return weight + (b @ a) * self.scaling


def read_lora(adapter_dir: str | Path | None, base: DenseCheckpoint, base_dir: str | Path) -> LoraUpdate:
    """The LoRA adapter at adapter_dir, checked against the base weights; None gives no update.

    No update is the base model itself: the expert of Efficient-Empathy Table 6 struc-(a), where the
    base model takes the rationality expert's place.
    """
    from safetensors import safe_open
    from transformers.utils import ADAPTER_CONFIG_NAME, ADAPTER_SAFE_WEIGHTS_NAME

    if adapter_dir is None:
        return LoraUpdate({}, 1.0)
    config_path, weights_path = Path(adapter_dir) / ADAPTER_CONFIG_NAME, Path(adapter_dir) / ADAPTER_SAFE_WEIGHTS_NAME
    if not config_path.exists():
        raise PipelineError(f"{adapter_dir}: not a PEFT adapter directory (no adapter_config.json)")

    def cannot_apply(detail: str) -> PipelineError:
        return PipelineError(f"{adapter_dir}: cannot apply adapter to {base_dir}: {detail}")

    config = json.loads(config_path.read_text())
    if config.get("peft_type") != "LORA":
        raise cannot_apply(f"peft_type {config.get('peft_type')!r} is not LORA")
    for option in UNSUPPORTED_LORA_OPTIONS:
        if config.get(option):
            raise cannot_apply(f"{option}={config[option]!r} is not supported by the BTX merge")
    if not weights_path.is_file():
        raise cannot_apply(f"no {ADAPTER_SAFE_WEIGHTS_NAME}")
    r, alpha = int(config["r"]), config["lora_alpha"]
    scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r  # peft LoraLayer.update_layer
    with safe_open(str(weights_path), "pt") as f:
        saved = {key: f.get_tensor(key) for key in f.keys()}
    weights = {}
    for key in saved:
        module, _, part = key.removeprefix(PEFT_KEY_PREFIX).rpartition(".lora_")
        if not key.startswith(PEFT_KEY_PREFIX) or part not in ("A.weight", "B.weight"):
            raise cannot_apply(f"{key} is not a LoRA weight of a linear layer (modules_to_save, DoRA, "
                               "LoRA biases and embeddings are not supported)")
        if part == "B.weight":
            continue
        a, b = saved[key], saved.get(f"{PEFT_KEY_PREFIX}{module}.lora_B.weight")
        target = f"{module}.weight"
        if b is None:
            raise cannot_apply(f"{module}: lora_A without lora_B")
        if target not in base.shapes or a.shape[0] != r or (b.shape[0], a.shape[1]) != base.shapes[target]:
            raise cannot_apply(f"{module}: LoRA r={a.shape[0]} update of shape {(b.shape[0], a.shape[1])} for "
                               f"base weight {base.shapes.get(target, 'none')} (not an adapter of this base model)")
        weights[target] = (a.float(), b.float())  # peft loads them into its float32 LoRA layers
    return LoraUpdate(weights, scaling)


# ---- the Mixtral checkpoint, tensor by tensor ------------------------------------------------------------

@dataclass(frozen=True)
class MoeWeight:
    """How one saved Mixtral tensor is made: expert e's dense weight, the experts' average, or a router."""

    dense_key: str | None  # None: the new router of `layer`
    expert: int | None = None  # None: the average of both experts (Eq. 8)
    layer: int | None = None


def saved_layout(moe) -> dict[str, torch.Tensor]:
    """Name -> (meta) tensor of everything moe.save_pretrained writes, in its order.

    save_pretrained's own two steps: drop tied copies (lm_head with tied embeddings), then convert
    transformers 5's fused in-memory experts (mlp.experts.gate_up_proj, mlp.experts.down_proj) back to
    the original Mixtral layout: block_sparse_moe.experts.<e>.w1/w3/w2 and block_sparse_moe.gate.
    """
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    return revert_weight_conversion(moe, remove_tied_weights_from_state_dict(moe.state_dict(), moe))


def moe_sources(saved: dict[str, torch.Tensor], base: DenseCheckpoint, dense_config) -> dict[str, MoeWeight]:
    """How each saved Mixtral tensor is made from the dense checkpoint (Eq. 6–8); errors if they do not fit.

    Per layer i, expert e (0 = sensibility, 1 = rationality): experts.<e>.w1/w2/w3 = gate_proj/down_proj/
    up_proj of expert e, gate = a new router; every other weight keeps its name and is the average.
    """
    sources = {}
    for key in saved:
        if router := ROUTER_KEY.fullmatch(key):
            sources[key] = MoeWeight(None, layer=int(router[1]))
        elif expert := EXPERT_KEY.fullmatch(key):
            proj = EXPERT_WEIGHT_SOURCES[expert[3]]
            sources[key] = MoeWeight(f"model.layers.{expert[1]}.mlp.{proj}.weight", expert=int(expert[2]))
        else:
            sources[key] = MoeWeight(key)
    used = {source.dense_key for source in sources.values()}
    tied_copy = {"lm_head.weight"} if dense_config.tie_word_embeddings else set()  # the embedding, not saved
    unmapped = sorted(base.shapes.keys() - used - tied_copy)
    unfilled = sorted(key for key, source in sources.items()
                      if source.dense_key is not None and source.dense_key not in base.shapes)
    if unmapped or unfilled:
        # e.g. q_proj.bias or q_norm of an architecture whose weights Mixtral has no place for
        raise PipelineError(f"{dense_config.model_type} expert: weights without a Mixtral place: "
                            f"{', '.join(unmapped[:3]) or 'none'}; Mixtral weights not filled: "
                            f"{', '.join(unfilled[:3]) or 'none'}")
    for key, source in sources.items():
        if source.dense_key is not None and base.shapes[source.dense_key] != tuple(saved[key].shape):
            raise PipelineError(f"{dense_config.model_type} expert: {source.dense_key} has shape "
                                f"{base.shapes[source.dense_key]}, Mixtral's {key} {tuple(saved[key].shape)}")
    return sources


def moe_tensor(source: MoeWeight, base: DenseCheckpoint, experts: list[LoraUpdate],
               routers: list[torch.Tensor]) -> torch.Tensor:
    """One Mixtral tensor in float32, computed from the one dense tensor it comes from."""
    if source.dense_key is None:
        return routers[source.layer]
    dense = base.float32(source.dense_key)
    if source.expert is not None:
        return experts[source.expert].merged(source.dense_key, dense)
    s, r = (expert.merged(source.dense_key, dense) for expert in experts)
    return (s + r).div_(2)  # = (W_s + W_r) / 2 to the bit, one float32 copy fewer


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, which hands freed heap pages back to the OS; None with another libc.

    glibc keeps the freed float32 temporaries of each tensor in its heap, between the tensors a
    shard keeps, instead of returning them: merging SmolLM2-135M into one 0.43 GB shard, the resident
    size grew by 1.0 GB without trimming after each tensor, by 0.46 GB with it (no cost measurable
    against the spread of run times).
    """
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def save_weights(out_dir: Path, saved: dict[str, torch.Tensor], tensor: Callable[[str], torch.Tensor],
                 max_shard_size: int | str, total_parameters: int) -> None:
    """Write tensor(key) for every key of `saved` in the shards, with the names and index, of save_pretrained.

    `saved` (meta tensors in the weights' dtype) plans the shards; only one shard's tensors are in
    memory at a time, each shard written as soon as it is complete.
    """
    from huggingface_hub import get_torch_storage_size, split_state_dict_into_shards_factory
    from safetensors.torch import save_file
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

    split = split_state_dict_into_shards_factory(
        saved, get_storage_size=get_torch_storage_size, max_shard_size=max_shard_size,
        # save_pretrained's tensors of one fused expert tensor are views of it, so it keeps them in one
        # shard (and counts the fused tensor once); meta tensors have no data pointer, but share a storage.
        get_storage_id=lambda meta: meta.untyped_storage()._cdata,
        filename_pattern=SAFE_WEIGHTS_NAME.replace(".safetensors", "{suffix}.safetensors"))
    trim = _malloc_trim()
    for filename, keys in split.filename_to_tensors.items():
        shard = {}
        for key in keys:
            shard[key] = tensor(key)
            if trim is not None:
                trim(0)
        save_file(shard, str(out_dir / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {"total_parameters": total_parameters, **split.metadata},
                 "weight_map": split.tensor_to_filename}
        (out_dir / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def btx_merge(base_dir: str | Path, expert_s_dir: str | Path | None, expert_r_dir: str | Path | None,
              out_dir: str | Path, router_seed: int, dtype: str = "bfloat16",
              max_shard_size: int | str = MAX_SHARD_SIZE) -> dict:
    """Merge the sensibility and rationality LoRA experts of base_dir into a Mixtral MoE at out_dir.

    expert_r_dir None puts the base model in the rationality expert's place (EE Table 6 struc-(a)).

    Writes what MixtralForCausalLM.save_pretrained(max_shard_size=...) would for the merged model:
    safetensors in `dtype` (bfloat16 by default), config, generation config, and the base model's
    tokenizer with its chat template. Returns a report for the stage log.
    """
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig, MixtralForCausalLM

    started = time.time()
    weight_dtype = torch_dtype(dtype)
    try:
        dense_config = AutoConfig.from_pretrained(str(base_dir))
    except OSError as exc:
        raise PipelineError(f"cannot load model from {base_dir}: {str(exc).splitlines()[0]}") from None
    config = mixtral_config(dense_config, weight_dtype)
    base = DenseCheckpoint(base_dir)
    experts = [read_lora(adapter_dir, base, base_dir) for adapter_dir in (expert_s_dir, expert_r_dir)]
    with torch.device("meta"):  # the model's names, shapes and configs, without its weights
        moe = MixtralForCausalLM(config).to(weight_dtype)
    saved = saved_layout(moe)
    sources = moe_sources(saved, base, dense_config)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    try:
        generation_config = GenerationConfig.from_pretrained(str(base_dir))
    except OSError:
        generation_config = moe.generation_config  # Mixtral's defaults from the config
    generator = torch.Generator().manual_seed(int(router_seed))
    routers = [torch.empty(NUM_EXPERTS, config.hidden_size).normal_(0.0, config.initializer_range, generator=generator)
               for _ in range(config.num_hidden_layers)]  # drawn in layer order, whatever order the files take

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_weights(tmp, saved, lambda key: moe_tensor(sources[key], base, experts, routers).to(weight_dtype),
                     max_shard_size, moe.num_parameters())
        moe.config.save_pretrained(tmp)
        generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        stabilise_saved_configs(tmp)
    return {
        "parameters": sum(p.numel() for p in moe.parameters()),
        "router_parameters": sum(saved[key].numel() for key, source in sources.items() if source.dense_key is None),
        "layers": config.num_hidden_layers,
        "experts": NUM_EXPERTS,
        "rationality_expert": "base" if expert_r_dir is None else str(expert_r_dir),
        "dtype": dtype,
        "seconds": round(time.time() - started, 1),
    }
