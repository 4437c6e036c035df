"""How many tokens an agent's trace takes on the course tokenizer, in three formats (issue 23).

The course model's window is 256 tokens. Every gold trace of the evaluation tasks
(:func:`course_utils.agent_tasks.build_agent_tasks`, 40 per kind, seed 0), one passage per lookup from
:class:`~course_utils.agent_tasks.OracleIndex`'s canonical pages (the real index's passages add about 100 tokens
to a lookup), rendered three ways:

- **json**: the ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` format with the brief tools prompt and
  ``Observation (name): ...`` turns (:func:`course_utils.agent_tasks.render_gold`);
- **compact**: a call as ``tool: argument; argument``, an observation as ``= ...``, the system prompt
  ``Tools: lookup, calc, date, law.``;
- **step-wise**: the longest single step when each step shows only the question, a line of notes (the first
  line of each earlier observation, cut at 120 characters) and the latest observation.

    python -m benchmarks.agent_token_budget

**2026-12-03** (SFT tokenizer c23b9c75ff8a; median / max / traces over 256 of 40):
arithmetic json 434/493/40, compact 202/261/1, step-wise 122/165/0; multi_hop json 374/426/40, compact 201/251/0,
step-wise 131/159/0; date json 242/269/5, compact 124/150/0, step-wise 76/92/0; legal json 219/298/4, compact
120/195/0, step-wise 88/154/0. The JSON wrapper, not the passages, is what overflows the window.
"""

from __future__ import annotations

import statistics

COMPACT_SYSTEM = "Tools: lookup, calc, date, law."


def main() -> None:
    from transformers import AutoTokenizer

    from course_utils.agent_tasks import OracleIndex, build_agent_tasks, gold_conversation, render_gold, split_plan
    from course_utils.data import world
    from course_utils.sft import load_or_build_sft_model
    from course_utils.tools import ToolCall, calculator, date_calculator, legal_lookup, run_tool, world_lookup

    tok = AutoTokenizer.from_pretrained(load_or_build_sft_model())
    w = world()
    tools = [calculator(), world_lookup(OracleIndex(w), k=1, warm=False), date_calculator(w), legal_lookup(w)]
    tasks = build_agent_tasks(w, 40, 0, "eval")

    def n_tokens(messages) -> int:
        return len(tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"])

    def summary(xs: list[int]) -> str:
        return f"{statistics.median(xs):.0f}/{max(xs)}/{sum(x > 256 for x in xs)}"

    system = {"role": "system", "content": COMPACT_SYSTEM}
    print("kind: median/max/over 256 of the traces, per format")
    for kind in ("arithmetic", "multi_hop", "date", "legal"):
        full, compact, step = [], [], []
        for t in [x for x in tasks if x["kind"] == kind]:
            full.append(len(tok(render_gold(tok, gold_conversation(t, tools, strict=False), tools),
                                add_special_tokens=False)["input_ids"]))
            calls, answer = split_plan(t)
            chat, notes, longest = [system, {"role": "user", "content": t["question"]}], [], 0
            for s in calls:
                obs = run_tool(ToolCall(s["tool"], dict(s["arguments"])), tools).content
                call = f"{s['tool']}: " + "; ".join(map(str, s["arguments"].values()))
                chat += [{"role": "assistant", "content": call}, {"role": "user", "content": "= " + obs}]
                asked = t["question"] + ("\nNotes: " + " ".join(notes) if notes else "") + "\n= " + obs
                longest = max(longest, n_tokens([system, {"role": "user", "content": asked},
                                                 {"role": "assistant", "content": "next"}]))
                notes.append(obs.split("\n")[0][:120])
            compact.append(n_tokens(chat + [{"role": "assistant", "content": answer}]))
            step.append(longest)
        print(f"{kind:10s} json {summary(full)}  compact {summary(compact)}  step-wise {summary(step)}")


if __name__ == "__main__":
    main()
