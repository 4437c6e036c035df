"""Checkpoints of a pretraining run: written whole or not at all, resumed exactly, and refused when
they do not fit the run that asks for them. Taught in notebook 02 ("Checkpoint and resume");
:func:`course_utils.pretrain.train` writes and reads them.

A checkpoint folder holds ``model.safetensors`` (weights; a tied head is stored once),
``optimizer.safetensors`` (AdamW moments and the torch RNG) and ``state.json`` (step, data and drill
positions, scheduler and where a gated decay opened, parameter groups, history, the training config and the precision), written
last, so that its presence marks a complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch

from course_utils.model import GPT, GPTConfig


class _Positioned(Protocol):
    """A data stream whose position a checkpoint saves (``pretrain._Batches``)."""

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...


#: ``cfg`` arguments are a ``pretrain.TrainConfig`` (a dataclass with a ``model`` GPTConfig); typed
#: loosely here so that this module needs nothing from pretrain, which imports it.
_TrainConfig = Any

__all__ = ["load_checkpoint_model"]


def _save_checkpoint(folder: Path, model: GPT, opt, sched, batches: _Positioned, step: int, history, cfg: _TrainConfig,
                     drills: _Positioned | None = None, precision: str = "fp32",
                     schedule: dict[str, Any] | None = None) -> None:
    """Write a checkpoint next to the old one, then swap: a kill never leaves a half-written one."""
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight" or not cfg.model.tie_embeddings}, tmp / "model.safetensors")
    osd = opt.state_dict()
    tensors = {f"{pid}.{name}": t.contiguous() for pid, st in osd["state"].items() for name, t in st.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, tmp / "optimizer.safetensors")
    state = {
        "step": step,
        "data": batches.state(),
        "drills": drills.state() if drills is not None else None,
        "scheduler": sched.state_dict(),
        "param_groups": osd["param_groups"],
        "history": history,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "precision": precision,  # what the matmuls ran in: a resumed run keeps it (see train)
        "schedule": schedule,  # where a gated decay opened (schedule.Schedule.state)
    }
    (tmp / "state.json").write_text(json.dumps(state))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


def _recover_checkpoint(folder: Path) -> None:
    """After a kill in the middle of :func:`_save_checkpoint`'s swap, put the newest
    complete checkpoint back in place (``state.json`` is written last, so it marks one)."""
    if (folder / "state.json").exists():
        return
    for candidate in (folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")):
        if (candidate / "state.json").exists():
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(candidate, folder)
            return


def _read_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json``; a sentence naming the file if it is not one."""
    path = folder / "state.json"
    try:
        state = json.loads(path.read_text())
        int(state["step"]), state["config"]["model"]  # noqa: B018
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a checkpoint's state ({type(exc).__name__}: {exc}): delete the "
                         f"checkpoint folder to start again, or restore it.") from None
    return state


#: Fields a resumed run may change: how long it runs, how often it measures and saves, and how it is
#: spread over processes (a checkpoint is written whole, sharded run or not).
_RESUMABLE = {"max_steps", "eval_every", "eval_batches", "checkpoint_every", "compile", "precision", "peak_matmul",
              "fsdp", "activation_checkpointing"}


def _check_resume_config(folder: Path, saved: dict[str, Any], cfg: _TrainConfig) -> None:
    """Refuse to continue a checkpoint with another recipe: a changed rate, batch or model would
    silently train a run nobody asked for. Lists what differs."""
    now = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    diffs = []
    for key in sorted(set(saved) | set(now)):
        if key in _RESUMABLE:
            continue
        if key == "model":  # a model knob added after the checkpoint was written counts at its default
            defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}
            diffs += [f"model.{k}: {saved[key].get(k, defaults.get(k))!r} -> {now[key].get(k)!r}"
                      for k in sorted(set(saved[key]) | set(now[key]))
                      if saved[key].get(k, defaults.get(k)) != now[key].get(k)]
        elif saved.get(key) != now.get(key):
            diffs.append(f"{key}: {saved.get(key)!r} -> {now.get(key)!r}")
    if diffs:
        raise ValueError(f"The checkpoint in {folder} was trained with other settings ({'; '.join(diffs)}): "
                         "resume with the same ones, or start again (resume=False; `course pretrain --overwrite`).")


def _load_checkpoint(folder: Path, model: GPT, opt, sched, batches: _Positioned,
                     drills: _Positioned | None = None) -> tuple[int, list]:
    from safetensors.torch import load_file

    state = _read_state(folder)
    missing, unexpected = model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.cfg.tie_embeddings)]  # the tied head
    if missing or unexpected:
        raise ValueError(f"{folder / 'model.safetensors'} does not fit the model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}.")
    tensors = load_file(folder / "optimizer.safetensors")
    torch.set_rng_state(tensors.pop("rng.torch"))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = t
    opt.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    sched.load_state_dict(state["scheduler"])
    batches.load(state["data"])
    if drills is not None and state.get("drills"):
        drills.load(state["drills"])
    return int(state["step"]), state["history"]


def load_checkpoint_model(run_dir: str | Path) -> GPT:
    """The model saved in ``run_dir/checkpoint`` (written by :func:`train`)."""
    from safetensors.torch import load_file

    folder = Path(run_dir) / "checkpoint"
    if not (folder / "state.json").exists():
        raise FileNotFoundError(f"No checkpoint in {folder}: train with out_dir={run_dir!s} first.")
    state = _read_state(folder)
    mcfg = dict(state["config"]["model"])
    model = GPT(GPTConfig(**mcfg))
    missing, unexpected = model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.cfg.tie_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{folder / 'model.safetensors'} does not fit its config: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}.")
    return model.eval()
