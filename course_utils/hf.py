"""From our from-scratch model to a transformers ``LlamaForCausalLM`` and back.

Taught in notebook 02 (section "Export to transformers"). The exported folder
(``config.json``, ``model.safetensors``, ``generation_config.json`` and the tokenizer
files) is the course's *base model*: notebooks 04 onwards load it with
``AutoModelForCausalLM.from_pretrained`` like any hub model.

Our :class:`~course_utils.model.GPT` computes the same function as Llama, so the export
is a renaming of weights, except that our fused ``qkv`` and ``gate_up`` projections are
split into transformers' ``q_proj``/``k_proj``/``v_proj`` and ``gate_proj``/``up_proj``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from course_utils.model import GPT, GPTConfig

__all__ = [
    "context_length",
    "export_hf",
    "gpt_from_llama",
    "llama_config",
    "load_hf",
    "logits_max_diff",
    "mixtral_config",
    "model_key",
    "resolve_model_source",
    "to_llama",
    "trainer_device_flags",
]


def context_length(model) -> int:
    """A transformers model's context (``max_position_embeddings``), or 2048 if it does not say.

    Used by every stage that trains or generates with a loaded model (notebooks 04-10).
    """
    return int(getattr(model.config, "max_position_embeddings", None) or 2048)


def resolve_model_source(spec: str | Path, parameter: str = "BASE_MODEL") -> str:
    """What to pass to ``from_pretrained``: a local model folder (checked) or a hub id.

    A path that exists must hold ``config.json``; a string that looks like a path but does
    not exist is a mistake, not a hub id, so it gets a sentence naming ``parameter``.
    """
    source = str(spec)
    local = Path(source).expanduser()
    if local.exists():
        if not (local / "config.json").exists():
            raise FileNotFoundError(f"{local} has no config.json: it is not a transformers model folder.")
        return str(local.resolve())
    if source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"No model folder at {source}: check the {parameter} path.")
    _check_hub_model(source, parameter)
    return source


def model_key(spec: str | Path) -> str:
    """What identifies a model in a cache key: a local folder by what its files hold (retrain it in
    place and the key changes), a hub id by its name."""
    local = Path(str(spec)).expanduser()
    if local.exists():
        from course_utils.artifacts import fingerprint

        return f"folder:{local.resolve()}:{fingerprint(local)}"
    return str(spec)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _check_hub_model(repo_id: str, parameter: str) -> None:
    """A hub id must be in the local Hugging Face cache or reachable on the hub; else a sentence
    (no traceback from deep inside transformers, no minutes of retries without a network)."""
    if not _HUB_ID.match(repo_id):
        raise FileNotFoundError(f"{repo_id!r} is neither a model folder nor a hub id (owner/name): check {parameter}.")
    import huggingface_hub

    if isinstance(huggingface_hub.try_to_load_from_cache(repo_id, "config.json"), str):
        return  # downloaded before: transformers loads it offline
    try:
        huggingface_hub.model_info(repo_id, timeout=10)
    except Exception as exc:  # no network, no such repo, gated: all the same to a learner
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise FileNotFoundError(
            f"Cannot load the model {repo_id!r} ({parameter}): it is not in the local Hugging Face cache and the "
            f"hub did not serve it ({reason}). Give a local model folder, or check the id and the network.") from None


def trainer_device_flags() -> dict:
    """Device flags for a transformers/trl ``TrainingArguments``: bf16 on a GPU that has it,
    and on a CPU ``use_cpu=True, bf16=False`` (trl configs default to bf16, which fails there).

    On a CPU activation checkpointing is off: trl 1.16 turns it on by default, which saves
    activation memory by running each forward twice; the course models are small, so it only
    cost time (LoRA on the SFT set: 1.18 -> 0.98 s/step, the same losses).
    """
    if torch.cuda.is_available():
        return {"use_cpu": False, "bf16": torch.cuda.is_bf16_supported(), "fp16": False}
    return {"use_cpu": True, "bf16": False, "fp16": False, "activation_checkpointing": False}


def llama_config(cfg: GPTConfig, *, bos_token_id=None, eos_token_id=None, pad_token_id=None):
    """The ``LlamaConfig`` describing the same architecture as ``cfg``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.ffn_hidden,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_head,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=cfg.tie_embeddings,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        initializer_range=cfg.init_std,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def mixtral_config(cfg: GPTConfig, **token_ids):
    """The ``MixtralConfig`` of a mixture-of-experts ``cfg``: Llama's attention and norms, and a sparse
    block whose router, top-k renormalised weights and SwiGLU experts are the course's :class:`MoE`
    (renormalised top-k weights; the capacity limit is a training-time device and is not exported)."""
    from transformers import MixtralConfig

    if not (cfg.top_k > 1 if cfg.norm_topk is None else cfg.norm_topk):
        raise ValueError("Mixtral renormalises the top-k router weights: only a model that does (norm_topk=True; "
                         "the default for top_k >= 2) exports to it; Switch's routing (top_k=1) stays course-only.")
    llama = llama_config(cfg, **token_ids).to_dict()
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_parameters",
            "tie_word_embeddings", "hidden_act", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id")
    return MixtralConfig(**{k: llama[k] for k in keep}, num_local_experts=cfg.n_experts,
                         num_experts_per_tok=cfg.top_k, router_aux_loss_coef=cfg.aux_loss_coef, sliding_window=None)


def _llama_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under transformers' names: Llama's, or Mixtral's for a mixture of experts (its experts
    stored as 3-D tensors, gate and up stacked as in our ``gate_up``)."""
    cfg = model.cfg
    C, Fh = cfg.d_model, cfg.ffn_hidden
    out = {"model.embed_tokens.weight": model.embed_tokens.weight, "model.norm.weight": model.norm.weight}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    for i, block in enumerate(model.layers):
        p = f"model.layers.{i}."
        q, k, v = block.self_attn.qkv.weight.split(C, dim=0)
        if cfg.n_experts:
            experts = block.mlp.experts
            mlp = {p + "mlp.gate.weight": block.mlp.router.weight,
                   p + "mlp.experts.gate_up_proj": torch.stack([e.gate_up.weight for e in experts]),
                   p + "mlp.experts.down_proj": torch.stack([e.down_proj.weight for e in experts])}
        else:
            gate, up = block.mlp.gate_up.weight.split(Fh, dim=0)
            mlp = {p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                   p + "mlp.down_proj.weight": block.mlp.down_proj.weight}
        out.update(
            {
                p + "self_attn.q_proj.weight": q,
                p + "self_attn.k_proj.weight": k,
                p + "self_attn.v_proj.weight": v,
                p + "self_attn.o_proj.weight": block.self_attn.o_proj.weight,
                **mlp,
                p + "input_layernorm.weight": block.input_layernorm.weight,
                p + "post_attention_layernorm.weight": block.post_attention_layernorm.weight,
            }
        )
    return {k: v.detach().clone().contiguous().float() for k, v in out.items()}


def to_llama(model: GPT, **token_ids):
    """A ``LlamaForCausalLM`` (float32, eval mode) holding ``model``'s weights; a
    ``MixtralForCausalLM`` for a mixture of experts."""
    from transformers import LlamaForCausalLM, MixtralForCausalLM

    if model.cfg.ssm_layers:
        raise ValueError("A hybrid with state-space blocks (ssm_layers) has no transformers architecture with the same "
                         "layout (Jamba's and Bamba's mixers differ): it stays a course model.")
    if model.cfg.n_experts:
        hf_model = MixtralForCausalLM(mixtral_config(model.cfg, **token_ids))
    else:
        hf_model = LlamaForCausalLM(llama_config(model.cfg, **token_ids))
    missing, unexpected = hf_model.load_state_dict(_llama_state_dict(model), strict=False)
    missing = [m for m in missing if not (model.cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"Weight names do not match: missing {missing}, unexpected {unexpected}")
    if model.cfg.tie_embeddings:
        hf_model.tie_weights()
    return hf_model.float().eval()


def gpt_from_llama(hf_model) -> GPT:
    """The inverse of :func:`to_llama`: our ``GPT`` from a ``LlamaForCausalLM``."""
    c = hf_model.config
    if getattr(c, "num_local_experts", None):
        raise ValueError("gpt_from_llama reads Llama models; a Mixtral folder stays a transformers model.")
    theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", 10000.0))
    cfg = GPTConfig(
        vocab_size=c.vocab_size,
        max_seq_len=c.max_position_embeddings,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        d_model=c.hidden_size,
        ffn_hidden=c.intermediate_size,
        rope_theta=float(theta),
        norm_eps=c.rms_norm_eps,
        tie_embeddings=bool(c.tie_word_embeddings),
    )
    model = GPT(cfg)
    sd = hf_model.state_dict()
    with torch.no_grad():
        model.embed_tokens.weight.copy_(sd["model.embed_tokens.weight"])
        model.norm.weight.copy_(sd["model.norm.weight"])
        if not cfg.tie_embeddings:
            model.lm_head.weight.copy_(sd["lm_head.weight"])
        for i, block in enumerate(model.layers):
            p = f"model.layers.{i}."
            block.self_attn.qkv.weight.copy_(
                torch.cat([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"], dim=0)
            )
            block.self_attn.o_proj.weight.copy_(sd[p + "self_attn.o_proj.weight"])
            block.mlp.gate_up.weight.copy_(
                torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]], dim=0)
            )
            block.mlp.down_proj.weight.copy_(sd[p + "mlp.down_proj.weight"])
            block.input_layernorm.weight.copy_(sd[p + "input_layernorm.weight"])
            block.post_attention_layernorm.weight.copy_(sd[p + "post_attention_layernorm.weight"])
    return model.eval()


def export_hf(model: GPT, out_dir: str | Path, tokenizer=None) -> Path:
    """Save ``model`` (and ``tokenizer``, a ``PreTrainedTokenizerFast``) as a transformers
    folder with ``save_pretrained`` (weights in safetensors). Returns the folder."""
    from transformers import GenerationConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids: dict = {}
    eos_ids = None
    if tokenizer is not None:
        ids = dict(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        # a base model stops at the end of a document; a chat model also at the end of a turn
        eos_ids = [tokenizer.eos_token_id]
        end_turn = tokenizer.convert_tokens_to_ids("<|end|>")
        if isinstance(end_turn, int) and end_turn != tokenizer.unk_token_id and end_turn not in eos_ids:
            eos_ids.append(end_turn)
    hf_model = to_llama(model, **ids)
    if eos_ids:
        hf_model.generation_config = GenerationConfig(
            bos_token_id=ids["bos_token_id"], eos_token_id=eos_ids, pad_token_id=ids["pad_token_id"]
        )
    hf_model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def load_hf(path: str | Path):
    """``(model, tokenizer)`` from an exported folder, with the standard Auto classes
    (no remote code; the tokenizer is ``None`` if the folder has none)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.joinpath("config.json").exists():
        raise FileNotFoundError(
            f"{path} is not an exported model folder (no config.json). "
            f"Run `course export-hf` or `load_or_build_base_model()` first."
        )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path) if path.joinpath("tokenizer.json").exists() else None
    return model, tok


@torch.no_grad()
def logits_max_diff(model: GPT, hf_model, idx: torch.Tensor) -> float:
    """Largest absolute difference between our logits and transformers' on ``idx`` (B, T)."""
    model.eval()
    ours, _ = model(idx)
    theirs = hf_model(input_ids=idx).logits
    return float((ours.float() - theirs.float()).abs().max())
