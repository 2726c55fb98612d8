"""Local generation with transformers: batched, left-padded, chat-templated, CPU or GPU."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import PipelineError
from ..progress import progress
from .base import Chat, Sampling


class TransformersBackend:
    name = "transformers"
    OPTIONS = ("batch_size", "dtype", "device", "show_progress")

    def __init__(self, model: str, adapter: str | None = None, batch_size: int = 16,
                 dtype: str = "auto", device: str = "auto", show_progress: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..models import torch_dtype

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            # CPUs have no fast bf16 matmul for generation here; GPUs do.
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype(dtype))
        except OSError as exc:
            raise PipelineError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from None
        if adapter:
            from peft import PeftModel

            # Merge on the fly: stages store adapters, never merged copies of the base.
            self.model = PeftModel.from_pretrained(self.model, adapter).merge_and_unload()
        self.tokenizer.padding_side = "left"  # decoder-only: pad on the left so replies line up
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.to(device).eval()
        self.device = device
        self.batch_size = int(batch_size)
        self.show_progress = show_progress

    def _prompt_text(self, chat: Chat) -> str:
        # A chat that ends with an assistant message is a prefill: the model continues that message
        # (the reply returned is only the continuation). Otherwise a new assistant turn is opened.
        if chat and chat[-1]["role"] == "assistant":
            return self.tokenizer.apply_chat_template(chat, tokenize=False, continue_final_message=True)
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    def generate(self, chats: Sequence[Chat], sampling: Sampling) -> list[str]:
        import torch

        # Longest prompts first: batches of similar length waste less compute on padding.
        order = sorted(range(len(chats)), key=lambda i: -len(str(chats[i])))
        replies: list[str] = [""] * len(chats)
        generator_seed = sampling.seed
        for start in progress(range(0, len(order), self.batch_size), desc="generate",
                              total=(len(order) + self.batch_size - 1) // self.batch_size,
                              enabled=self.show_progress):
            idx = order[start:start + self.batch_size]
            texts = [self._prompt_text(chats[i]) for i in idx]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
            if sampling.temperature > 0:
                # Seed per batch (not once) so a resumed run reproduces the same samples.
                torch.manual_seed(generator_seed + start)
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                out = self.model.generate(**batch, **kwargs)
            new_tokens = out[:, batch["input_ids"].shape[1]:]
            for i, text in zip(idx, self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                replies[i] = text.strip()
        return replies
