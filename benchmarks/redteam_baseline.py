"""The attack suite against the course's undefended models (issue 22's first measurement).

Every attack and benign request of ``data/security/`` (64 + 64) asked of a model with the assistant's system
prompt (:data:`course_utils.redteam.SYSTEM_PROMPT`), raw and with special-token sanitisation; the success rate per
kind of attack and the false-refusal rate on the benign requests (:func:`course_utils.security.attack_table`).

    python -m benchmarks.redteam_baseline

Measured 2026-12-03, learner-mode SFT model c23b9c75ff8a and DPO model fd72dec09c40, greedy, 48 new tokens:

| kind | sft | sft sanitized | dpo | dpo sanitized |
|---|---|---|---|---|
| direct / indirect injection, prompt leak, token forgery | 0.00 | 0.00 | 0.00 | 0.00 |
| role play / "ignore previous" / multi-turn jailbreaks | 1.00 | 1.00 | 1.00 | 1.00 |
| encoding jailbreaks | 0.75 | 0.75 | 0.75 | 0.75 |
| all attacks | 0.47 | 0.47 | 0.47 | 0.47 |
| benign (false refusals) | 0.00 | 0.00 | 0.00 | 0.00 |

The zeros and the ones both say that the models cannot read this prompt yet, not that they resist or give in:
with the system prompt their replies degenerate ('{persak"ak"ak"...'), so no injected marker or canary ever comes
out, and every reply to a forbidden request counts as "not refused" (the jailbreaks' 1.00 is garbage, not help).
Two things follow for notebook 11: the assistant must first be trained to follow a system prompt with rules (the
issue's instruction-hierarchy SFT/DPO data), and a forbidden request's success must need a *relevant* answer, not
just the absence of a refusal. Some prompts (system prompt + planted page) also pass the 256-token window.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    """Print the table for the given models (default: the course's SFT and DPO models and the two assistants),
    each undefended and with special-token sanitisation, through the RAG chain (the planted pages in the index)."""
    import pandas as pd

    from course_utils import data
    from course_utils.rag import load_or_build_index
    from course_utils.rag_chain import load_llm
    from course_utils.security import Defences, attack_table, load_or_build_assistant, plant_documents, run_suite

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="transformers folders (default: the course's models)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    models = {p: p for p in args.models}
    if not models:
        from course_utils.dpo import load_or_build_dpo_model
        from course_utils.sft import load_or_build_sft_model

        models = {"sft": load_or_build_sft_model(), "dpo": load_or_build_dpo_model(),
                  "helpful": load_or_build_assistant(hierarchy=False), "rules": load_or_build_assistant(hierarchy=True)}
    records = data.load_security("attacks") + data.load_security("benign")
    index = load_or_build_index()
    plant_documents(index, records)
    columns = {}
    for name, path in models.items():
        llm = load_llm(path, max_new_tokens=args.max_new_tokens)
        for sanitize in (False, True):
            res = run_suite(llm, records, defences=Defences(sanitize=sanitize), index=index,
                            max_new_tokens=args.max_new_tokens)
            columns[f"{name}{' sanitized' if sanitize else ''}"] = attack_table(res)["rate"]
    print(pd.DataFrame(columns).round(2).to_markdown())


if __name__ == "__main__":
    main()
