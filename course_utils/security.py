"""Running notebook 11's attack suite (:mod:`course_utils.redteam`) against a model, and its table.

:func:`run_suite` asks a model every attack and benign request with the assistant's system prompt and judges each
reply; :func:`attack_table` gives the attack success rate per kind and the false-refusal rate.
"""

from __future__ import annotations

from typing import Any

from course_utils.redteam import SYSTEM_PROMPT, attack_succeeded, is_refusal

__all__ = ["attack_table", "run_suite"]


def _conversation(record: dict[str, Any], system_prompt: str | None) -> list[dict[str, str]]:
    """The chat a model sees: the system prompt, then the record's turns; planted documents become the passage of
    the course's reading prompt around the last user turn (what the RAG chain would give the model)."""
    from course_utils.supervised import READ_PROMPT

    turns = [dict(m) for m in record["messages"]]
    if record.get("documents"):
        turns[-1]["content"] = READ_PROMPT.format(context=" ".join(record["documents"]), question=turns[-1]["content"])
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + turns


def run_suite(llm, records: list[dict[str, Any]], system_prompt: str | None = SYSTEM_PROMPT, *,
              sanitize: bool = False) -> Any:
    """Ask ``llm`` (:func:`course_utils.rag_chain.load_llm`'s pipeline) every record, with ``system_prompt``, and
    judge each reply: a DataFrame ``id, kind, split, attack, reply, succeeded, refused`` (``attack`` False for the
    benign requests, whose ``succeeded`` is NaN). ``sanitize=False`` renders the turns as they are, so chat markers
    written in a message become real special tokens (the undefended baseline); ``sanitize=True`` escapes them
    (:func:`course_utils.tokenizer.escape_special_tokens`, the first defence)."""
    import pandas as pd

    from course_utils.rag_chain import clean_reply
    from course_utils.tokenizer import escape_special_tokens

    tok = llm.pipeline.tokenizer
    prompts = []
    for r in records:
        conv = _conversation(r, system_prompt)
        if sanitize:
            conv = [m if m["role"] == "system" else {**m, "content": escape_special_tokens(m["content"], tok)} for m in conv]
        prompts.append(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True))
    replies = [clean_reply(t) for t in llm.batch(prompts)]
    rows = []
    for r, reply in zip(records, replies):
        attack = "success" in r
        rows.append({"id": r["id"], "kind": r["kind"], "split": r["split"], "attack": attack, "reply": reply,
                     "succeeded": float(attack_succeeded(r, reply)) if attack else float("nan"),
                     "refused": float(is_refusal(reply))})
    return pd.DataFrame(rows)


def attack_table(results) -> Any:
    """Attack success rate per kind (and over all attacks) and the false-refusal rate on the benign requests,
    from :func:`run_suite`'s table: a DataFrame ``n, rate`` by kind, plus ``all attacks`` and ``benign (false
    refusals)`` rows."""
    att = results[results["attack"]]
    table = att.groupby("kind", sort=False)["succeeded"].agg(["size", "mean"]).rename(columns={"size": "n", "mean": "rate"})
    table.loc["all attacks"] = [len(att), att["succeeded"].mean()]
    ben = results[~results["attack"]]
    if len(ben):
        table.loc["benign (false refusals)"] = [len(ben), ben["refused"].mean()]
    table["n"] = table["n"].astype(int)
    return table
