"""Local generation with transformers: batched, left-padded, chat-templated, CPU or GPU."""

from __future__ import annotations

from collections.abc import Sequence

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.progress import progress
from empathy_pipeline.llm.base import Chat, Sampling, seeds_for


class TransformersBackend:
    name = "transformers"
    OPTIONS = ("batch_size", "dtype", "device", "show_progress")

    def __init__(self, model: str, adapter: str | None = None, batch_size: int = 16,
                 dtype: str = "auto", device: str = "auto", show_progress: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from empathy_pipeline.modeling.models import torch_dtype

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

    def generate(self, chats: Sequence[Chat], sampling: Sampling, seeds: Sequence[int] | None = None) -> list[str]:
        import torch
        from transformers import LogitsProcessorList

        seeds = seeds_for(chats, sampling, seeds)
        # Longest prompts first: batches of similar length waste less compute on padding.
        order = sorted(range(len(chats)), key=lambda i: -len(str(chats[i])))
        replies: list[str] = [""] * len(chats)
        for start in progress(range(0, len(order), self.batch_size), desc="generate",
                              total=(len(order) + self.batch_size - 1) // self.batch_size,
                              enabled=self.show_progress):
            idx = order[start:start + self.batch_size]
            texts = [self._prompt_text(chats[i]) for i in idx]
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
            if sampling.temperature > 0:
                # HF sampling draws every row from one global RNG, so a row's reply would depend on
                # its batch. Instead decode "greedily" over scores in which RowSampler has already
                # drawn each row's token with that row's own seeded generator.
                sampler = RowSampler([seeds[i] for i in idx], sampling.temperature, sampling.top_p)
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                              logits_processor=LogitsProcessorList([sampler]))
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                out = self.model.generate(**batch, **kwargs)
            new_tokens = out[:, batch["input_ids"].shape[1]:]
            for i, text in zip(idx, self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                replies[i] = text.strip()
        return replies


class RowSampler:
    """A transformers LogitsProcessor that samples each row's next token with the row's own generator.

    Per row: temperature, then top-p (nucleus: the most probable tokens whose mass before them is
    below top_p; the first always stays), then one uniform draw from a torch.Generator seeded with
    that row's request seed, mapped through the kept tokens' cumulative mass. The returned scores
    are 0 at the drawn token and -inf elsewhere, so greedy decoding emits exactly the draw. Every
    row uses one draw per step whatever the other rows do, so a reply depends on its prompt and
    seed only: not on batch size, batch order or the left padding beside it. No top-k: the
    Sampling settings (shared with vLLM and OpenAI servers) have none.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.seeds = list(seeds)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.generators = None  # made on the first step, on the device the scores are on

    def __call__(self, input_ids, scores):
        import torch

        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        # stable: equal probabilities keep token order, so the same row always sorts the same way
        probs, token_ids = torch.sort(probs, dim=-1, descending=True, stable=True)
        if self.top_p < 1.0:
            probs = probs.masked_fill(probs.cumsum(dim=-1) - probs >= self.top_p, 0.0)
        cumulative = probs.cumsum(dim=-1)
        draws = torch.cat([torch.rand(1, generator=g, device=scores.device) for g in self.generators])
        pick = torch.searchsorted(cumulative, (draws * cumulative[:, -1]).unsqueeze(-1), right=True)
        # A draw that rounds up to the total mass must still land on a kept token.
        pick = torch.minimum(pick, (probs > 0).sum(dim=-1, keepdim=True) - 1)
        forced = torch.full_like(scores, float("-inf"))
        return forced.scatter_(-1, token_ids.gather(-1, pick), 0.0)
