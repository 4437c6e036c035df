"""Data parallelism and sharding for the training loop: DDP, FSDP and what each rank holds.

Taught in notebook 03 ("Sharded training"). Under ``torchrun`` (or ``accelerate launch``) with several
processes, :func:`course_utils.pretrain.train` gives each rank its share of every batch and

- **DDP** (``DistributedDataParallel``, the default): every rank holds the whole model, its whole
  gradient and the whole optimizer state, and the gradients are averaged (all-reduce) after backward;
- **FSDP** (``TrainConfig.fsdp``; PyTorch's FSDP2, ``fully_shard`` on every block and then on the
  model: ZeRO-3's full sharding): every rank holds 1/N of each parameter, gradient and optimizer
  moment; a block's parameters are gathered (all-gather) just before its forward and backward and
  freed after, and gradients are reduce-scattered, so each rank keeps only its shard.

Checkpoints of a sharded run are written whole by rank 0 (:func:`whole`) in the format of an unsharded
run, so a run can be resumed sharded or not, and exported. :func:`state_bytes` measures what a rank
holds, the figure that FSDP divides.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

import torch

from course_utils.model import GPT

__all__ = ["dist_info", "from_rank0", "gradient_sync", "load_whole_optimizer", "shard", "state_bytes",
           "weights_digest", "whole"]


def dist_info() -> tuple[int, int]:
    """``(rank, world size)`` of this process (``(0, 1)`` outside ``torchrun``)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def from_rank0(value: Any, distributed: bool) -> Any:
    """Rank 0's ``value`` on every rank (the probes run on rank 0 only), so that all ranks keep one schedule."""
    if not distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def weights_digest(model: GPT) -> str:
    """A short hash of the weights (equal on every rank of a healthy DDP run)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:16]


def shard(model: GPT) -> GPT:
    """Full sharding (FSDP2): each block is one unit that is gathered for its own forward and backward,
    and the model (embedding, final norm, head) is the root unit. In place; returns ``model``."""
    from torch.distributed.fsdp import fully_shard

    for block in model.layers:
        fully_shard(block)
    fully_shard(model)
    return model


def gradient_sync(fwd: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """The context of a micro-batch's backward: gradients are synchronised only when ``sync`` (the last
    micro-batch of a step), with DDP's ``no_sync`` or FSDP's ``set_requires_gradient_sync``."""
    if hasattr(fwd, "set_requires_gradient_sync"):  # FSDP2
        fwd.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if sync or not hasattr(fwd, "no_sync") else fwd.no_sync()


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer state this rank holds (its shards under FSDP)."""
    params = sum(_local(p).numel() * _local(p).element_size() for p in model.parameters())
    grads = sum(_local(p.grad).numel() * _local(p.grad).element_size() for p in model.parameters()
                if p.grad is not None)
    optim = 0
    if opt is not None:
        optim = sum(_local(v).numel() * _local(v).element_size() for st in opt.state.values() for v in st.values()
                    if torch.is_tensor(v) and v.dim() > 0)
    return {"params": params, "grads": grads, "optimizer": optim, "total": params + grads + optim}


def _param_names(model: torch.nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The parameter names in the optimizer's own order (its state's integer keys)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in opt.param_groups for p in group["params"]]


class _Whole:
    """A state dict seen as a module or optimizer (what ``checkpoint._save_checkpoint`` reads)."""

    def __init__(self, state: dict[str, Any]):
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


def whole(model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[_Whole, _Whole]:
    """The sharded ``model`` and ``opt`` gathered whole on rank 0 (CPU), in an unsharded run's format
    (the optimizer's state keyed by parameter index). A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=options)
    osd = get_optimizer_state_dict(model, opt, options=options)
    index = {name: i for i, name in enumerate(_param_names(model, opt))}
    optim = {"state": {index[n]: st for n, st in osd.get("state", {}).items()},
             "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in osd.get("param_groups", [])]}
    return _Whole(weights), _Whole(optim)


def load_whole_optimizer(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an unsharded optimizer ``state`` (index-keyed, e.g. from a checkpoint) into the optimizer of
    the sharded ``model``: each rank keeps its shard of every moment."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not state.get("state"):
        return
    names = _param_names(model, opt)
    for group, saved in zip(opt.param_groups, state["param_groups"]):  # keys a scheduler added (initial_lr)
        for key, value in saved.items():
            group.setdefault(key, value)
    by_name = {"state": {names[int(i)]: st for i, st in state["state"].items()},
               "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(model, opt, by_name, options=StateDictOptions(full_state_dict=True))
