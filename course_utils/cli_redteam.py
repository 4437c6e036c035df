"""``course redteam``: notebook 11's attack suite against a model, the RAG chain or an endpoint, with or without
defences; the table of success rates, false refusals and latency (:mod:`course_utils.security`)."""

from __future__ import annotations

import argparse
from typing import Any

from course_utils.cli_course import command

__all__ = ["add_redteam"]

_DEFENCES = ("sanitize", "spotlight", "clean_documents", "output_filter", "classifier")


def _cmd_redteam(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils import data
    from course_utils.redteam import ATTACK_KINDS
    from course_utils.security import (CLASSIFIER_MAX_FPR, Defences, InjectionClassifier, attack_table,
                                       plant_documents, run_suite)

    chosen = [] if args.defences == "none" else list(_DEFENCES) if args.defences == "all" else \
        [d.strip() for d in args.defences.split(",") if d.strip()]
    unknown = sorted(set(chosen) - set(_DEFENCES))
    if unknown:
        raise ValueError(f"--defences: unknown {', '.join(unknown)}; use all, none or a comma-separated list of "
                         f"{', '.join(_DEFENCES)}.")
    kinds = [k.strip() for k in args.kinds.split(",")] if args.kinds else list(ATTACK_KINDS)
    if set(kinds) - set(ATTACK_KINDS):
        raise ValueError(f"--kinds: unknown {', '.join(sorted(set(kinds) - set(ATTACK_KINDS)))}; the kinds are "
                         f"{', '.join(ATTACK_KINDS)}.")
    suite = data.load_security("attacks") + data.load_security("benign")
    records = [r for r in suite if "success" not in r or r["kind"] in kinds]
    if args.limit:
        records = [r for r in records if "success" in r][: args.limit] + [r for r in records if "success" not in r][: args.limit]
    index = None
    if args.index != "none":
        from course_utils.rag import RagIndex, load_or_build_index

        index = load_or_build_index() if args.index == "course" else RagIndex.load(args.index)
        plant_documents(index, suite)
    if args.endpoint:
        from course_utils.chains import endpoint_llm

        llm, target = endpoint_llm(args.endpoint, args.endpoint_model, max_new_tokens=args.max_new_tokens), args.endpoint
    else:
        from course_utils.rag_chain import load_llm

        target = _assistant_model(args.assistant)
        llm = load_llm(target, max_new_tokens=args.max_new_tokens)
    classifier = None
    if "classifier" in chosen:
        from course_utils.embed import load_embedder

        embedder = index.embedder if index is not None else load_embedder()
        classifier = InjectionClassifier(embedder, max_fpr=CLASSIFIER_MAX_FPR).fit([r for r in suite if r["split"] == "train"])
    defences = Defences(**{d: True for d in chosen if d != "classifier"}, classifier=classifier)
    results = run_suite(llm, records, defences=defences, index=index, k=args.k, max_new_tokens=args.max_new_tokens)
    table = attack_table(results)
    held = results[results["split"] == "test"]
    out = {"target": str(target), "retrieval": index is not None, "defences": defences.label,
           "table": {k: {"n": int(v["n"]), "rate": None if v["rate"] != v["rate"] else round(float(v["rate"]), 4)}
                     for k, v in table.iterrows()},
           "held_out_attack_success": None if not held["attack"].any() else round(float(held[held["attack"]]["succeeded"].mean()), 4),
           "seconds": round(results.attrs["seconds"], 2), "seconds_per_request": round(results.attrs["seconds"] / len(results), 4)}
    if not args.json:
        print(f"{out['target']} | retrieval: {out['retrieval']} | defences: {out['defences']}")
        print(table.round(2).to_string())
        if classifier is not None:
            print("(the classifier was trained on the suite's phrasings 0-2; held-out phrasing 3, attacks: "
                  f"{out['held_out_attack_success']})")
        print(f"{out['seconds']} s, {out['seconds_per_request']} s per request")
        out["_quiet"] = True
    return out


def _assistant_model(name: str):
    """The model ``course redteam --model`` names: rules, helpful, sft, dpo, a folder or a hub id."""
    if name in ("rules", "helpful"):
        from course_utils.security import load_or_build_assistant

        return load_or_build_assistant(hierarchy=name == "rules")
    if name in ("sft", "dpo"):
        from course_utils.dpo import load_or_build_dpo_model
        from course_utils.sft import load_or_build_sft_model

        return load_or_build_sft_model() if name == "sft" else load_or_build_dpo_model()
    from course_utils.hf import resolve_model_source

    return resolve_model_source(name, "--model")


def add_redteam(sub: argparse._SubParsersAction) -> None:
    """Register ``course redteam``."""
    p = command(sub, "redteam", "attack the assistant with notebook 11's suite (injections, leaks, jailbreaks, "
                                 "forged chat markers) and print the success rate per kind, with or without defences")
    p.add_argument("--model", dest="assistant", default="rules",
                   help="rules (the assistant trained to keep its rules, the default), helpful (the undefended "
                        "one), sft, dpo, a transformers folder or a hub id")
    p.add_argument("--endpoint", default=None, help="attack an OpenAI-compatible endpoint instead (base URL, e.g. "
                                                    "http://127.0.0.1:8000/v1); --endpoint-model names its model")
    p.add_argument("--endpoint-model", default="course", help="the model name the endpoint expects")
    p.add_argument("--index", default="course", help="course (the course's index with the planted pages added: "
                                                     "the RAG chain), none (the model alone, pages given as the "
                                                     "passage) or an index folder")
    p.add_argument("--defences", default="none", help="none, all, or a comma-separated list of "
                                                      f"{', '.join(_DEFENCES)}")
    p.add_argument("--kinds", default=None, help="comma-separated attack kinds (default: all eight)")
    p.add_argument("--limit", type=int, default=None, help="at most this many attacks and this many benign requests")
    p.add_argument("--k", type=int, default=2, help="passages retrieved per request (default: 2)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="longest reply in tokens")
    p.set_defaults(func=_cmd_redteam)
