"""The ``course`` command: each stage of the course without a notebook.

Thin on purpose: it parses arguments, calls one function of a stage module, and prints
the result. Every subcommand returns a dict; with ``--json`` that dict is printed as
one JSON line, last, on standard output (progress and logs go to standard error), so
scripts and tests can read it with ``json.loads(out.splitlines()[-1])``.

Adding a stage: write ``_add_<stage>(sub)`` that registers its parser with
``_command(sub, name, help)`` and ``set_defaults(func=...)`` and append it to ``_REGISTRARS``. Import the stage module
inside the handler, so that ``course env`` stays fast. The commands that run the course itself (env, notebooks,
prebuild, site, results, ...) are in :mod:`course_utils.cli_course`; ``course redteam`` (notebook 11) in
:mod:`course_utils.cli_redteam`; ``course agent`` (notebook 12) in :mod:`course_utils.cli_agent`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from course_utils.cli_agent import add_agent as _add_agent
from course_utils.cli_course import OPERATIONS
from course_utils.cli_course import command as _command
from course_utils.cli_redteam import add_redteam as _add_redteam

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], dict[str, Any]]




def _cmd_data(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils import data

    if args.action == "build":
        result = data.build(corpus=not args.no_corpus, corpus_tokens=args.corpus_tokens)
        if not args.no_corpus:
            result["corpus"] = data.stats(corpus=True)["corpus"]
        return result
    return data.stats(corpus=not args.no_corpus)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "data", "build or count the course's data (world, corpus, documents, SFT, preference, eval)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = actions.add_parser("build", help="regenerate every data file and the cached corpus (deterministic)")
    b.add_argument("--no-corpus", action="store_true", help="skip the pretraining corpus")
    b.add_argument("--corpus-tokens", type=int, default=None, help="corpus size in rough tokens (default 3.5M)")
    s = actions.add_parser("stats", help="counts of every set and split, and rough token sizes")
    s.add_argument("--no-corpus", action="store_true", help="do not build or count the corpus")
    for q in (b, s):
        q.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    p.set_defaults(func=_cmd_data)


def _cmd_pretrain(args: argparse.Namespace) -> dict[str, Any]:
    import os

    # Before torch loads: idle OpenMP threads sleep instead of spinning, which on a shared
    # CPU (other notebooks, tests) is the difference between 1x and up to 10x slower steps.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pathlib import Path

    from course_utils.pretrain import run_pretraining

    if args.out and not args.resume:
        run = Path(args.out)
        if (run / "checkpoint").exists() or (run / "history.json").exists():
            if not args.overwrite:
                raise ValueError(f"{run} already holds a run: add --resume to continue it or --overwrite to "
                                 "start again from step 0 (its checkpoint is replaced).")
            import shutil

            shutil.rmtree(run / "checkpoint", ignore_errors=True)
    overrides: dict[str, Any] = {"max_steps": args.steps, "batch_size": args.batch_size, "compile": args.compile,
                                 "fsdp": args.fsdp or None, "activation_checkpointing": args.activation_checkpointing or None}
    if args.experts:  # the mixture-of-experts variant of the preset's model (notebook 03)
        import dataclasses

        from course_utils.pretrain import get_preset

        overrides["model"] = dataclasses.replace(get_preset(args.preset).model, n_experts=args.experts,
                                                 top_k=args.top_k)
    result, tok = run_pretraining(
        args.preset,
        out=args.out,
        resume=args.resume,
        text_file=args.text_file,
        progress=not args.no_progress,
        **overrides,
    )
    summary = result.summary()
    if args.experts:
        last = result.history[-1] if result.history else {}
        summary["moe"] = {"experts": args.experts, "top_k": args.top_k,
                          "active_params": result.model.num_params(active=True),
                          **{k: last[k] for k in ("aux_loss", "expert_load_ratio", "dropped") if k in last}}
    if int(os.environ.get("RANK", "0")) != 0:
        args.json = False  # under torchrun only rank 0 reports (it holds every rank's weight digest)
        return {"_quiet": True}
    if args.out:
        from course_utils.hf import export_hf

        export_hf(result.model.float().cpu(), args.out, tok)
        summary["hf_folder"] = str(args.out)
    return summary


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "pretrain", "pretrain the from-scratch model on the course corpus (notebook 02)")
    p.add_argument("--preset", default="fast", help="fast | learner | gpu | tiny (default fast)")
    p.add_argument("--out", default=None, help="run folder: checkpoints, history.json and the exported HF model")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out if there is one")
    p.add_argument("--overwrite", action="store_true", help="start again from step 0 in an --out that holds a run")
    p.add_argument("--steps", type=int, default=None, help="override the preset's number of optimizer steps")
    p.add_argument("--batch-size", type=int, default=None, help="override the micro-batch size (per process)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--text-file", default=None, help="train on this text file instead (blank-line separated documents)")
    p.add_argument("--fsdp", action="store_true", help="under torchrun/accelerate launch: shard parameters, gradients "
                   "and optimizer states over the processes (FSDP) instead of replicating them (DDP)")
    p.add_argument("--activation-checkpointing", action="store_true",
                   help="recompute each block's activations in backward (less memory, more time)")
    p.add_argument("--experts", type=int, default=0, help="a mixture of experts: this many experts per block (0: dense)")
    p.add_argument("--top-k", type=int, default=2, help="with --experts: experts per token (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_pretrain)


def _cmd_export_hf(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.hf import export_hf
    from course_utils.pretrain import load_checkpoint_model, load_or_build_base_model

    if args.run:
        from pathlib import Path

        from transformers import AutoTokenizer

        model = load_checkpoint_model(args.run)
        # `course pretrain --out` saves the run's own tokenizer in the run folder before the first step
        run = Path(args.run)
        if not (run / "tokenizer.json").exists():
            raise FileNotFoundError(f"{run} has no tokenizer.json: the weights cannot be paired with the tokenizer "
                                    "they were trained with. Export a run written by `course pretrain --out`.")
        out = export_hf(model, args.out, AutoTokenizer.from_pretrained(run))
    else:
        path = load_or_build_base_model(preset=args.preset)
        out = __import__("pathlib").Path(args.out)
        __import__("shutil").copytree(path, out, dirs_exist_ok=True)
    return {"hf_folder": str(out)}


def _add_export_hf(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "export-hf", "export a pretrained model as a transformers folder (LlamaForCausalLM + tokenizer)")
    p.add_argument("--out", required=True, help="folder to write (config.json, model.safetensors, tokenizer)")
    p.add_argument("--run", default=None, help="a `course pretrain --out` folder (default: the cached base model)")
    p.add_argument("--preset", default=None, help="preset of the cached base model (default by mode)")
    p.set_defaults(func=_cmd_export_hf)


def _cmd_tokenizer(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.tokenizer import load_or_build_tokenizer

    tok = load_or_build_tokenizer()
    ids = tok(args.text, add_special_tokens=False)["input_ids"]
    return {"vocab_size": len(tok), "ids": ids, "tokens": tok.convert_ids_to_tokens(ids)}


def _add_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "tokenizer", "build the course tokenizer (cached) and tokenize a text with it")
    p.add_argument("text", nargs="?", default="Hello, world!", help="text to tokenize")
    p.set_defaults(func=_cmd_tokenizer)


def _cmd_rag(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from course_utils.rag import IndexConfig, RagIndex, build_index

    if args.action == "index":
        from course_utils.prep import PrepConfig

        t0 = time.perf_counter()
        if args.url and args.store != "qdrant":
            raise ValueError("--url names a Qdrant server: add --store qdrant.")
        prep = PrepConfig(chunk_by=args.chunk_by, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
        config = IndexConfig(prep=prep, embedder=args.embedder, kind=args.kind,
                             folder=str(Path(args.path).resolve()) if args.path else None, store=args.store,
                             url=args.url, collection=args.collection)
        out = Path(args.out)
        reuse = None
        if (out / "meta.json").exists() and not args.rebuild:
            reuse = RagIndex.load(out)
            if reuse.config.embedder != args.embedder:
                print(f"{out} was embedded with {reuse.config.embedder!r}: building it anew with {args.embedder!r}")
                reuse = None
        checkpoint = out.with_name(out.name + ".embedding.npz")  # what an interrupted build already embedded
        index = build_index(args.path, config, reuse=reuse, checkpoint=checkpoint, precision=args.precision,
                            progress=None if args.json else True)
        t1 = time.perf_counter()
        index.save(out, progress=None if args.json else True)
        stages = {**index.seconds, "save": round(time.perf_counter() - t1, 3)}
        checkpoint.unlink(missing_ok=True)
        update = index.update
        seconds = time.perf_counter() - t0
        if not args.json:
            print(f"{out}: {len(index)} chunks; embedded {update['embedded']} new chunk texts, reused "
                  f"{update['reused']}" + (f", resumed {update['resumed']} from an interrupted build"
                                            if update.get("resumed") else "") + f" ({seconds:.1f} s)")
            if "files_added" in update:
                print(f"files added {len(update['files_added'])}, changed {len(update['files_changed'])}, deleted "
                      f"{len(update['files_deleted'])}; chunks removed {update['chunks_removed']}")
            if "store" in update:
                s = update["store"]
                print(f"qdrant ({args.url or 'local, ' + str(out / 'qdrant')}): points written {s['written']}, "
                      f"deleted {s['deleted']}, kept {s['kept']}")
            print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        return {"index": str(out), "chunks": len(index), "documents": len({c.doc_id for c in index.chunks}),
                "duplicates_removed": len(index.duplicates), "kind": args.kind, "store": args.store,
                "embedder": args.embedder, "precision": args.precision, "update": update, "stages": stages,
                "seconds": round(seconds, 2)}
    from course_utils.rag_chain import ask, load_llm

    index = RagIndex.load(args.index)  # FAISS or Qdrant: whichever store it was built with
    llm = None
    if not args.no_generate:
        if args.model:
            model_dir = args.model
        else:
            from course_utils.sft import load_or_build_sft_model

            model_dir = load_or_build_sft_model()
        llm = load_llm(model_dir, max_new_tokens=args.max_new_tokens)
    result = ask(args.question, index, llm, k=args.k, method=args.method, max_new_tokens=args.max_new_tokens)
    result["store"] = index.config.store
    index.close()
    if not args.json:
        print(f"answer: {result['answer']}" if llm is not None else "retrieval only (--no-generate)")
        print(f"cited: {', '.join(result['cited_ids']) or '-'}")
        for h in result["retrieved"]:
            print(f"  {h['rank']}. {h['id']:<24} {h['score']:.4f}  {h['source']}\n     {h['text'][:110]}")
        print(f"timings (s): {result['timings']}")
        result["_quiet"] = True
    return result


def _add_rag(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "rag", "retrieval-augmented generation: index a folder of documents, ask questions (notebook 08)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = actions.add_parser("index", help="prepare (cleanse, deduplicate, chunk), embed and index a folder of "
                                         "HTML/Markdown/text files")
    i.add_argument("path", nargs="?", default=None, help="folder of .html/.md/.txt files (default: the course's "
                                                         "document store)")
    i.add_argument("--out", required=True, help="folder to write the index to")
    i.add_argument("--kind", default="flat", choices=["flat", "ivf", "hnsw"], help="FAISS index type (default flat)")
    i.add_argument("--store", default="faiss", choices=["faiss", "qdrant"],
                   help="vector store: faiss (default) or qdrant (Qdrant's embedded local mode in OUT/qdrant, or "
                        "the server at --url); `course rag ask --index OUT` then uses it")
    i.add_argument("--url", default=None, help="with --store qdrant: a Qdrant server's URL, e.g. "
                                               "http://localhost:6333 (API key from $QDRANT_API_KEY)")
    i.add_argument("--collection", default="course", help="with --store qdrant: the collection's name (default course)")
    i.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="embedding precision: auto (bf16 where this CPU really has it, measured), bf16 or fp32")
    i.add_argument("--embedder", default="all-MiniLM-L6-v2",
                   help="sentence-transformers model id or folder (default: the packaged all-MiniLM-L6-v2)")
    i.add_argument("--chunk-by", default="chars", choices=["chars", "tokens"], help="chunk size unit")
    i.add_argument("--chunk-size", type=int, default=600, help="chunk size in characters or tokens (default 600)")
    i.add_argument("--chunk-overlap", type=int, default=80, help="overlap between chunks (default 80)")
    i.add_argument("--rebuild", action="store_true", help="embed everything again, even if --out holds an index "
                                                          "(by default only new or changed text is embedded)")
    a = actions.add_parser("ask", help="answer a question from an index (retrieved chunks, answer, citations)")
    a.add_argument("question", help="the question, in quotes")
    a.add_argument("--index", required=True, help="an index folder written by `course rag index`")
    a.add_argument("--no-generate", action="store_true", help="retrieval only: no model is loaded")
    a.add_argument("--model", default=None, help="transformers model folder (default: the course SFT model, "
                                                 "built if not cached)")
    a.add_argument("--k", type=int, default=3, help="chunks to retrieve (default 3)")
    a.add_argument("--method", default="hybrid", choices=["dense", "bm25", "hybrid"], help="retrieval method")
    a.add_argument("--max-new-tokens", type=int, default=48, help="longest answer in tokens")
    for q in (i, a):
        q.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    p.set_defaults(func=_cmd_rag)


def _cmd_dpo(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.dpo import run_dpo

    return run_dpo(sft_model=args.sft_model, pairs=args.pairs, eval_limit=args.eval_limit,
                   progress=not args.no_progress)


def _add_dpo(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "dpo", "align the SFT model with DPO (LoRA, trl) and compare it with the SFT model (notebook 06)")
    p.add_argument("--sft-model", default=None, help="transformers folder or hub id to align (default: the course "
                                                     "SFT model, built if not cached)")
    p.add_argument("--pairs", type=int, default=None, help="held-out preference pairs to score (default 40 fast, 300)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluation questions to answer (default 24 fast, 170)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_dpo)


def _cmd_reward_model(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.reward import run_reward_model

    return run_reward_model(base_model=args.base_model, pairs=args.pairs, with_win_rate=args.win_rate,
                            prompts=args.prompts, progress=not args.no_progress)


def _add_reward_model(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "reward-model", "train the reward model on preference pairs; held-out accuracy per flaw "
                                      "(notebook 06)")
    p.add_argument("--base-model", default=None, help="transformers folder or hub id under the scalar head "
                                                      "(default: the course SFT model)")
    p.add_argument("--pairs", type=int, default=None, help="score only the first N held-out pairs (default all 300)")
    p.add_argument("--win-rate", action="store_true", help="also the win rate of DPO answers over SFT answers "
                                                           "(builds the DPO model if needed)")
    p.add_argument("--prompts", type=int, default=None, help="prompts for the win rate (default 16 fast, 100)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_reward_model)


def _cmd_sft(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.settings import get_settings
    from course_utils.sft import run_sft

    return run_sft(get_settings(), base_model=args.base_model, per_kind=args.per_kind,
                   eval_limit=args.eval_limit, progress=not args.no_progress)


def _add_sft(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "sft", "supervised fine-tuning of the base model (cached as the SFT model), scored before and after")
    p.add_argument("--base-model", default=None, help="a transformers model folder or hub id (default: the course base model)")
    p.add_argument("--per-kind", type=int, default=None, help="held-out SFT conversations scored per kind (default by mode)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluation-set seen questions scored (default by mode)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_sft)


def _cmd_lora(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.lora import run_lora
    from course_utils.settings import get_settings

    return run_lora(get_settings(), base_model=args.base_model, rank=args.rank, steps=args.steps,
                    eval_limit=args.eval_limit, progress=not args.no_progress)


def _add_lora(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "lora", "LoRA: from scratch vs peft, LoRA vs full fine-tuning, merge, and the unseen-facts adapter")
    p.add_argument("--base-model", default=None, help="a transformers model folder or hub id (default: the course base model)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r (alpha = 2r)")
    p.add_argument("--steps", type=int, default=None, help="LoRA training steps (default: notebook 05's budget, lora.default_lora_config)")
    p.add_argument("--eval-limit", type=int, default=None, help="questions scored per set (default by mode)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_lora)


def _cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.evaluation import run_eval

    return run_eval(args.model, args.limit, progress=not args.no_progress, max_new_tokens=args.max_new_tokens)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "eval", "evaluate a model on the evaluation set: EM/F1, ROUGE, BLEU/chrF, perplexity, "
                              "RAG metrics, with bootstrap confidence intervals")
    p.add_argument("--model", default="sft",
                   help="base | sft | lora | dpo | rag, or a transformers model folder (or hub id)")
    p.add_argument("--limit", type=int, default=None, help="questions evaluated (default: 8 fast, 60 learner)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="tokens generated per answer (greedy)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_eval)


def _cmd_probe(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.evaluation import load_for_eval
    from course_utils.probes import reading_and_recall
    from course_utils.settings import get_settings

    settings = get_settings()
    n_reading = args.reading or (12 if settings.fast else 60)
    n_birth = args.birthplace or (24 if settings.fast else 120)
    model, tok, source = load_for_eval(args.model, settings)
    figures = reading_and_recall(model, tok, settings, n_reading=n_reading, n_birthplace=n_birth)
    return {"model": args.model, "source": str(source), "n_reading": n_reading, "n_birthplace": n_birth, **figures}


def _add_probe(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "probe", "the reading probe (a fact copied from a passage just read, both name variants) and "
                               "the birthplace probe (a seen fact recalled closed-book) of a model (notebook 02)")
    p.add_argument("--model", default="base", help="base | sft | dpo, or a transformers model folder (built if not cached)")
    p.add_argument("--reading", type=int, default=None, help="passages per name variant (default: 12 fast, 60)")
    p.add_argument("--birthplace", type=int, default=None, help="people asked about (default: 24 fast, 120)")
    p.set_defaults(func=_cmd_probe)


def _cmd_serve(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.serve import serve

    return serve(args.model, host=args.host, port=args.port, slots=args.slots, index=args.index, k=args.k,
                 say=lambda line: print(line, file=sys.stderr, flush=True))


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "serve", "an OpenAI-compatible chat service over a course model (/v1/chat/completions, "
                               "/v1/models; notebook 13) until Ctrl-C")
    p.add_argument("--model", default="sft", help="sft | dpo, or a transformers chat model folder (default: sft)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--slots", type=int, default=8, help="sequences batched together (default: 8)")
    p.add_argument("--index", default=None, help="answer with retrieval: an index folder (`course rag index`), or "
                                                 "`course` for the course's own index (notebook 08); answers carry "
                                                 "the passages and the ids they cite")
    p.add_argument("--k", type=int, default=3, help="with --index: passages retrieved per question (default: 3)")
    p.set_defaults(func=_cmd_serve)


def _cmd_chain(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import replace

    from course_utils.chains import LegalChainConfig, ask_legal, load_chain_models
    from course_utils.rag import RagIndex, load_or_build_index

    index = RagIndex.load(args.index) if args.index else load_or_build_index()
    config = replace(LegalChainConfig(), selector=args.selector, judge=args.judge, method=args.method,
                     max_new_tokens=args.max_new_tokens)
    models = load_chain_models(drafter=args.model, judge=args.judge,
                               reward=None if args.reward_model == "none" else args.reward_model)
    result = ask_legal(args.question, index, models, config)
    if not args.json:
        print(f"answer: {result['answer']}")
        print(f"cites: {', '.join(result['cited_doc_ids']) or '-'}")
        for i, d in enumerate(result["drafts"]):
            scores = ", ".join(f"{k} {v:.3f}" for k, v in d.items() if k != "text")
            print(f"  {'*' if i == result['best'] else ' '} draft {i + 1}: {d['text']}\n      {scores}")
        print("timings (s): " + ", ".join(f"{k} {v:.3f}" for k, v in result["timings"].items()))
        result["_quiet"] = True
    return result


def _add_chain(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "chain", "the legal chain: articles, precedents, three drafts, scores, the best answer "
                               "with citations (notebook 09)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("ask", help="answer a question about the legal code of Valdmark")
    a.add_argument("question", help="the question, in quotes")
    a.add_argument("--index", default=None, help="an index folder written by `course rag index` (default: the "
                                                 "course index, built if not cached)")
    a.add_argument("--model", default=None, help="transformers folder or hub id that drafts (default: the course's "
                                                 "drafting model, built if not cached)")
    a.add_argument("--selector", default="grounding+reward", choices=["first", "reward", "grounding", "judge",
                                                                      "grounding+reward", "all three"],
                   help="how the best draft is picked (default grounding+reward)")
    a.add_argument("--reward-model", default="course", help="reward model folder, `course` (notebook 06's, built if "
                                                            "not cached; the default) or `none` (no reward score)")
    a.add_argument("--judge", action="store_true", help="also score the drafts with the LLM judge (the DPO model)")
    a.add_argument("--method", default="hybrid", choices=["dense", "bm25", "hybrid"], help="retrieval method")
    a.add_argument("--max-new-tokens", type=int, default=40, help="longest draft in tokens")
    a.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    p.set_defaults(func=_cmd_chain)


_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    *OPERATIONS,  # env, artifacts, notebooks, figures, prebuild, instructor, site, map, results (cli_course)
    _add_pretrain,
    _add_probe,
    _add_export_hf,
    _add_tokenizer,
    _add_data,
    _add_rag,
    _add_chain,
    _add_redteam,
    _add_agent,
    _add_dpo,
    _add_reward_model,
    _add_sft,
    _add_lora,
    _add_eval,
    _add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``course`` with every stage's subcommand."""
    parser = argparse.ArgumentParser(
        prog="course",
        description="Run each stage of the LLM course without a notebook.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _REGISTRARS:
        register(sub)
    return parser


def _print_human(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        print(f"{key}: {value}")


#: Integer options that must be at least 1 (``chunk_overlap`` may be 0).
_POSITIVE = ("timeout", "corpus_tokens", "steps", "batch_size", "chunk_size", "k", "max_new_tokens", "pairs",
             "eval_limit", "prompts", "per_kind", "rank", "limit", "reading", "birthplace", "port", "slots")
#: Model options and the course's own names they may also take.
_MODEL_OPTIONS = {"base_model": (), "sft_model": (), "model": ("base", "sft", "lora", "dpo", "rag")}


def _check_args(args: argparse.Namespace) -> None:
    """Bad input gets a sentence before any model or data is loaded."""
    for name in _POSITIVE:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
    if getattr(args, "experts", 0) < 0:
        raise ValueError(f"--experts must be 0 (dense) or more, got {args.experts}.")
    if getattr(args, "experts", 0) and not 1 <= args.top_k <= args.experts:
        raise ValueError(f"--top-k: top_k={args.top_k} must be between 1 and n_experts={args.experts}.")
    if getattr(args, "chunk_overlap", None) is not None and args.chunk_overlap < 0:
        raise ValueError(f"--chunk-overlap must be 0 or more, got {args.chunk_overlap}.")
    if args.command == "serve" and args.index not in (None, "course"):
        from pathlib import Path

        if not (Path(args.index) / "chunks.jsonl").is_file():
            raise ValueError(f"--index {args.index} is not an index folder: build one with `course rag index DOCS "
                             f"--out DIR`, or give --index course for the course's own index.")
    question = getattr(args, "question", None)
    if question is not None and not any(ch.isalnum() for ch in question):
        raise ValueError(f"The question {question!r} has no words: ask something, in quotes.")
    for name, keywords in _MODEL_OPTIONS.items():
        value = getattr(args, name, None)
        if value is not None and value not in keywords and not (name == "model" and args.command == "rag"
                                                                and getattr(args, "no_generate", False)) \
                and not (name == "model" and args.command == "agent" and value == "agent"):
            from course_utils.hf import resolve_model_source

            resolve_model_source(value, f"--{name.replace('_', '-')}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``course`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler = args.func
    try:
        _check_args(args)
        result = func(args)
    except (FileNotFoundError, ValueError) as exc:
        # A learner's mistake gets a sentence, not a traceback.
        print(f"course {args.command}: error: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        return 2
    code = int(result.pop("_exit", 0))
    quiet = bool(result.pop("_quiet", False))
    if args.json:
        print(json.dumps(result, default=str))
    elif not quiet:
        _print_human(result)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
