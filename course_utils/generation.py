"""Generation every stage shares: the end-of-turn ids, a conversation record's prompt and gold
reply, batched greedy replies from any causal LM in its chat template, and the retrieved passages
that fit a prompt. The lowest layer of the model side: it imports no stage module.

Taught in notebook 04 (replies of the SFT model); every later notebook generates through
:func:`generate_answers`, directly or through the evaluation harness (:mod:`course_utils.harness`).
"""

from __future__ import annotations

from typing import Any

import torch

from course_utils.hf import context_length
from course_utils.supervised import READ_PROMPT
from course_utils.tokenizer import END_OF_TURN, encode_chat

__all__ = ["end_ids", "fit_passages", "generate_answers", "prompt_and_gold"]


def end_ids(tokenizer) -> list[int]:
    """The ids that end a reply: ``<|end|>`` (the end of a chat turn) and the EOS token."""
    ids = [tokenizer.convert_tokens_to_ids(END_OF_TURN)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return [i for i in ids if i is not None and i >= 0]


def prompt_and_gold(record: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """The messages before the last assistant turn, and that turn's content (the gold reply)."""
    messages = record["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(f"Record {record.get('id', '?')} does not end with an assistant turn.")
    return messages[:-1], messages[-1]["content"]


@torch.no_grad()
def generate_answers(model, tokenizer, conversations: list[list[dict[str, str]]], max_new_tokens: int = 48,
                     batch_size: int = 16, progress: bool = True, desc: str = "generating") -> list[dict[str, Any]]:
    """Greedy replies to each conversation (a list of messages ending with a user turn).

    Returns one dict per conversation: ``reply`` (text up to the end of the turn, special
    tokens removed), ``stopped`` (the model closed its turn with ``<|end|>`` within
    ``max_new_tokens``), ``new_tokens``. Prompts longer than the context keep their last
    tokens (a warning says how many were cut).
    """
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    ends = end_ids(tokenizer)
    end_turn = ends[0]
    ctx = context_length(model)
    keep = max(8, ctx - max_new_tokens)
    # message text is encoded as plain text: "<|assistant|>" typed by a user cannot forge a turn
    encoded = [encode_chat(tokenizer, c, add_generation_prompt=True) for c in conversations]
    cut = sum(len(e) > keep for e in encoded)
    if cut:
        print(f"note: {cut} prompt(s) longer than the context ({ctx} tokens) minus {max_new_tokens} new tokens "
              f"keep only their last {keep} tokens")
    encoded = [e[-keep:] for e in encoded]
    out: list[dict[str, Any]] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ends[-1]
    for start in tqdm(range(0, len(encoded), batch_size), desc=desc, disable=not progress, unit="batch"):
        chunk = encoded[start : start + batch_size]
        T = max(len(e) for e in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        att = torch.zeros((len(chunk), T), dtype=torch.long)
        for i, e in enumerate(chunk):  # left padding: every prompt ends where generation starts
            ids[i, T - len(e):] = torch.tensor(e)
            att[i, T - len(e):] = 1
        gen = model.generate(
            input_ids=ids.to(device), attention_mask=att.to(device), max_new_tokens=max_new_tokens,
            do_sample=False, eos_token_id=ends, pad_token_id=pad,
        )[:, T:].cpu()
        for row in gen.tolist():
            stop_at = next((i for i, t in enumerate(row) if t in ends), None)
            body = row if stop_at is None else row[:stop_at]
            out.append({
                "reply": tokenizer.decode(body, skip_special_tokens=True).strip(),
                "stopped": stop_at is not None and row[stop_at] == end_turn,
                "new_tokens": len(body) + (stop_at is not None),
            })
    return out


def fit_passages(passages: list[str], question: str, tokenizer, context: int, max_new_tokens: int = 48) -> list[str]:
    """The first passages (in rank order) whose prompt still fits ``context`` tokens with room
    for ``max_new_tokens``; the best passage alone is cut at a sentence or word if even it is too long."""
    def n_tokens(ps: list[str]) -> int:
        text = READ_PROMPT.format(context=" ".join(ps), question=question)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 8  # + chat markers

    budget = context - max_new_tokens
    kept: list[str] = []
    for p in passages:
        if n_tokens(kept + [p]) <= budget:
            kept.append(p)
        else:
            break
    if not kept and passages:
        words = passages[0].split()
        while words and n_tokens([" ".join(words)]) > budget:
            words = words[: int(len(words) * 0.85)]
        kept = [" ".join(words)] if words else []
    return kept
