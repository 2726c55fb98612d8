"""Offline batched generation with vLLM (GPU boxes; install the `gpu` extra)."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import PipelineError
from .base import Chat, Sampling


class VllmBackend:
    name = "vllm"
    OPTIONS = ("tensor_parallel_size", "gpu_memory_utilization", "dtype", "max_model_len")

    def __init__(self, model: str, adapter: str | None = None, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, dtype: str = "auto", max_model_len: int | None = None):
        try:
            from vllm import LLM
        except ImportError:
            raise PipelineError(
                "llm.backend 'vllm' needs the gpu extra: pip install 'empathy-pipeline[gpu]' (Linux + CUDA only)"
            ) from None
        kwargs = dict(model=model, tensor_parallel_size=int(tensor_parallel_size),
                      gpu_memory_utilization=float(gpu_memory_utilization), dtype=dtype)
        if max_model_len:
            kwargs["max_model_len"] = int(max_model_len)
        self.lora_request = None
        if adapter:
            import json
            from pathlib import Path

            from vllm.lora.request import LoRARequest

            rank = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", 8)
            kwargs.update(enable_lora=True, max_lora_rank=max(8, int(rank)))
            self.lora_request = LoRARequest("adapter", 1, str(adapter))
        self.llm = LLM(**kwargs)

    def generate(self, chats: Sequence[Chat], sampling: Sampling) -> list[str]:
        from vllm import SamplingParams

        # One seed per request (not per batch): outputs do not depend on how vLLM schedules them.
        params = [
            SamplingParams(max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                           top_p=sampling.top_p if sampling.temperature > 0 else 1.0, seed=sampling.seed + i)
            for i in range(len(chats))
        ]
        continue_final = bool(chats) and chats[0][-1]["role"] == "assistant"
        outputs = self.llm.chat(list(chats), params, lora_request=self.lora_request, use_tqdm=True,
                                add_generation_prompt=not continue_final,
                                continue_final_message=continue_final)
        return [o.outputs[0].text.strip() for o in outputs]
