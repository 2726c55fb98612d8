"""Efficient-Empathy §5.1.3: train only the routers of the merged MoE on the entire training set.

Every weight but the per-layer routers is frozen: the experts and the averaged attention stay exactly
as btx_merge wrote them. The loop is modeling/training.py's (the stock Trainer, so DeepSpeed and
several GPUs are configuration), with two callbacks of its own: the routers come back from a
checkpoint on resume, and the model is cast back to its stored dtype before the save.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint

from empathy_pipeline.core.errors import PipelineError
from empathy_pipeline.modeling.models import torch_dtype
from empathy_pipeline.modeling.training import checkpoint_dir, load_examples, run_trainer, training_arguments

ROUTER_SUFFIX = "mlp.gate.weight"  # where transformers 5 keeps each layer's Mixtral router


def freeze_all_but_routers(model) -> int:
    """requires_grad only on the per-layer routers; returns how many router tensors train.

    Matches the router by its full name ("…mlp.gate.weight"), not by "gate" anywhere in the name,
    which would also train the experts' gate projections (the authors' freeze rule did).
    """
    n = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith(ROUTER_SUFFIX))
        n += param.requires_grad
    if n != model.config.num_hidden_layers:
        raise PipelineError(f"expected one router per layer ({model.config.num_hidden_layers}), found {n}: "
                            "is this a Mixtral checkpoint from btx_merge?")
    return n


def trainable_in_float32(model) -> int:
    """Upcast every trainable parameter to float32 in place; the frozen rest keeps its dtype.

    Mixed precision with float32 master weights: AdamW's state is then float32 too, and steps below
    a bf16 weight's rounding step accumulate instead of vanishing (for |w| >= 2^-5 a bf16 ulp is
    2.4e-4, so a step of 1e-4 rounds away every time). The forward is unchanged: with train.bf16
    the Trainer runs it under bf16 autocast, which casts the float32 router weight to bf16 for its
    F.linear with the bf16 hidden state (MixtralTopKRouter is a bare F.linear, then a float32
    softmax), and the gradient flows back through that cast into the float32 weight. Without
    train.bf16 the whole model is float32 already. DeepSpeed casts the module to its own dtype and
    keeps float32 master weights itself (and ZeRO-3 parameters hold no data here), so under it
    nothing is touched. Returns how many tensors were upcast.
    """
    from accelerate.utils import DistributedType

    if PartialState().distributed_type == DistributedType.DEEPSPEED:
        return 0
    n = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()  # same Parameter object: names, hooks, tying unchanged
            n += 1
    return n


def _layer_index(name: str) -> int:
    return int(name.split("layers.", 1)[1].split(".", 1)[0])


class RestoreRoutersOnResume(TrainerCallback):
    """On resume, put the checkpoint's router weights into the model the Trainer is resuming.

    Trainer._load_from_checkpoint loads the checkpoint's safetensors with a plain load_state_dict,
    but transformers 5 writes Mixtral in its original on-disk layout
    (model.layers.<i>.block_sparse_moe.gate.weight) while the model in memory calls the router
    model.layers.<i>.mlp.gate.weight. No MoE-layer key matches, the Trainer only warns ("missing
    keys ... unexpected keys"), and the run would go on from the checkpoint's step and AdamW state
    but with the routers of moe_dir. Only the routers train, so copying them back (float32, as the
    checkpoint holds them) restores the run exactly; a test checks it ends bit-identical to an
    uninterrupted one. DeepSpeed restores its own checkpoints by in-memory names: nothing done there.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from accelerate.utils import DistributedType
        from safetensors import safe_open

        if state.global_step == 0 or model is None or PartialState().distributed_type == DistributedType.DEEPSPEED:
            return
        checkpoint = get_last_checkpoint(str(args.output_dir))
        routers = {_layer_index(n): p for n, p in model.named_parameters() if n.endswith(ROUTER_SUFFIX)}
        saved: dict[int, torch.Tensor] = {}
        for file in sorted(Path(checkpoint).glob("*.safetensors")) if checkpoint else ():
            with safe_open(str(file), "pt") as f:
                for key in f.keys():
                    if key.endswith(".gate.weight") and ".experts." not in key and "layers." in key:
                        saved[_layer_index(key)] = f.get_tensor(key)
        if saved.keys() != routers.keys():
            raise PipelineError(f"{checkpoint or args.output_dir}: resuming at step {state.global_step} but the "
                                f"checkpoint has routers for {len(saved)} of {len(routers)} layers; "
                                f"delete {args.output_dir} to start afresh")
        with torch.no_grad():
            for i, param in routers.items():
                param.copy_(saved[i])


def train_router(moe_dir: str | Path, samples: pl.DataFrame, train_cfg: dict, out_dir: str | Path,
                 loss_csv: str | Path, *, callbacks: Sequence[Any] = ()) -> dict:
    """Fine-tune only the routers of the MoE at moe_dir on samples (NLL of the response, Eq. 10).

    With train.bf16 the frozen model stays in the checkpoint's stored dtype (bf16 after btx_merge)
    and runs under bf16 autocast, while the routers train as float32 parameters with float32 AdamW
    state (trainable_in_float32); without it everything trains in float32. Either way the whole MoE
    is saved to out_dir in the stored dtype, so every tensor but the routers is bit-identical to
    moe_dir. `callbacks` (TrainerCallbacks) see the model before that final cast. Returns a report
    for the stage log.
    """
    from transformers import AutoConfig

    started = time.time()
    tokenizer, examples, n_skipped = load_examples(moe_dir, samples, int(train_cfg["max_length"]), out_dir)

    # The dtype the merged checkpoint is stored in (loading below overwrites config.dtype).
    stored_dtype = torch_dtype(str(AutoConfig.from_pretrained(str(moe_dir)).dtype or "float32").removeprefix("torch."))
    args = training_arguments(train_cfg, checkpoint_dir(out_dir))  # before loading: DeepSpeed ZeRO-3
    set_seed(int(train_cfg["seed"]))
    # Loading in the stored dtype, never rounding to a narrower one, is what keeps the frozen
    # tensors bit-identical through the save.
    dtype = stored_dtype if train_cfg["bf16"] else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(str(moe_dir), dtype=dtype)
    except OSError as exc:
        raise PipelineError(f"cannot load model from {moe_dir}: {str(exc).splitlines()[0]}") from None
    n_routers = freeze_all_but_routers(model)
    trainable_in_float32(model)

    class SaveInStoredDtype(TrainerCallback):
        # The routers (without train.bf16 the whole model) are float32 while training; casting back
        # before the save keeps models/moe the size of the merged checkpoint and leaves every frozen
        # tensor exactly as it was. The routers are saved in the stored dtype too. Measured with
        # transformers 5.23: a bf16 checkpoint holding float32 routers loads cleanly, but
        # from_pretrained (default, dtype="auto" or bfloat16) casts those routers to bf16 anyway, and
        # vLLM runs all weights in one dtype, so float32 routers on disk would buy
        # a mixed-dtype file and nothing else. What the rounding loses: each router weight moves by
        # at most half a bf16 ulp (relative 2^-9), the rounding every other weight of the checkpoint
        # already has (measured on routers trained in the tests: routing probabilities move by at
        # most 1.3e-3 for x ~ N(0, I)). It is one rounding of the result, not a loss per step: the
        # steps below that size accumulated in float32 and are in the weights being rounded.
        def on_train_end(self, args, state, control, model=None, **kwargs):
            if model is not None:
                model.to(stored_dtype)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dtypes = {p.requires_grad: str(p.dtype).removeprefix("torch.") for p in model.parameters()}
    print(f"router training: {n_routers} routers, {trainable:,} trainable parameters in {dtypes[True]}, "
          f"frozen weights in {dtypes[False]}; {len(examples)} examples, {n_skipped} skipped")
    run = run_trainer(model, tokenizer, examples, train_cfg, out_dir, loss_csv, args=args,
                      callbacks=[RestoreRoutersOnResume(), *callbacks, SaveInStoredDtype()])
    return {"n_examples": len(examples), "n_skipped": n_skipped, "routers": n_routers,
            "trainable_parameters": trainable, **run, "seconds": round(time.time() - started, 1)}
