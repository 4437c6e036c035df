"""LLM chains: the legal-advice chain of notebook 09, its scorers, its trace, and what each model costs.

Taught in notebook 09; ``course chain ask`` runs :func:`ask_legal`.

The chain answers a question about the legal code of Valdmark in six steps, each a LangChain
runnable with its own name in the trace:

1. **retrieve articles**: the articles closest to the question (hybrid retrieval, ``kind = article``);
2. **retrieve precedents**: the court reports that apply those articles, closest to the question first
   (a report named in the question comes first of all);
3. **context**: the passages in the order the question needs them (the named report, else the best
   article, first), as many as fit the model's context (:func:`course_utils.generation.fit_passages`);
4. **drafts**: three answers in parallel, one per reading prompt of the SFT set (:data:`READ_PROMPTS`);
5. **scores**: each draft scored in parallel by the reward model of notebook 06, a grounding score
   against the passages (:func:`grounding_score`) and, optionally, an LLM judge (notebook 10);
6. **select**: the draft with the best score of the chosen selector (:data:`SELECTORS`), returned with
   the passages it cites (:func:`course_utils.scores.cite`).

:func:`legal_chain` builds it in LCEL; :class:`StepTrace` is a LangChain callback handler that records
every step's inputs, outputs and times (:func:`plot_trace` draws them); :func:`draft_table` and
:func:`selector_table` measure single draft against best-of-3 on evaluation questions;
:func:`cost_table` and :func:`pareto` price answers for model selection and routing.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.callbacks import BaseCallbackHandler

from course_utils.generation import fit_passages
from course_utils.scores import _CITE_STOP, _WORD, cite
from course_utils.supervised import READ_PROMPTS

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

    from course_utils.rag import RagIndex

__all__ = [
    "SELECTORS",
    "ChainModels",
    "LegalChainConfig",
    "StepTrace",
    "article_labels",
    "ask_legal",
    "citation_scores",
    "cost_table",
    "default_drafter",
    "endpoint_llm",
    "draft_table",
    "grounding_score",
    "legal_chain",
    "load_chain_models",
    "order_passages",
    "pareto",
    "plot_trace",
    "precedents_applying",
    "retrieve_articles",
    "retrieve_legal",
    "select_draft",
    "selector_table",
]

#: How the best draft is chosen: ``first`` (the first prompt's draft: a single-draft chain), one scorer
#: (``reward``, ``grounding``, ``judge``) or the mean of several (each scaled to [0, 1]).
SELECTORS: dict[str, tuple[str, ...]] = {
    "first": (),
    "reward": ("reward",),
    "grounding": ("grounding",),
    "judge": ("judge",),
    "grounding+reward": ("grounding", "reward"),
    "all three": ("grounding", "reward", "judge"),
}

_LABEL = re.compile(r"\bArticle (\d+)\b")


@dataclass
class LegalChainConfig:
    """The knobs of the legal chain."""

    k_articles: int = 2  # articles retrieved
    k_precedents: int = 2  # court reports kept
    depth: int = 20  # reports searched before those applying a retrieved article are put first
    method: str = "hybrid"  # retrieval: dense | bm25 | hybrid
    max_new_tokens: int = 40  # longest draft
    prompts: tuple[str, ...] = READ_PROMPTS  # one draft per prompt ({context}, {question})
    selector: str = "grounding+reward"  # which SELECTORS entry picks the answer
    judge: bool = False  # score the drafts with the LLM judge too (needs ChainModels.judge)


@dataclass
class ChainModels:
    """The models a chain calls: the drafting LLM (:func:`course_utils.rag_chain.load_llm`), the reward
    model and its tokenizer (:func:`course_utils.reward.load_reward_model`), an optional judge
    (:class:`course_utils.judge.LocalJudge` or ``EndpointJudge``)."""

    llm: Any
    reward_model: Any = None
    reward_tokenizer: Any = None
    judge: Any = None
    names: dict[str, str] = field(default_factory=dict)  # what each model is, for reports
    tokenizer: Any = None  # an endpoint model (:func:`endpoint_llm`): a tokenizer that counts its prompt's tokens
    context: int = 4096  # an endpoint model: its context window, in those tokens


def default_drafter(settings=None):
    """The course's drafting model: the SFT model with the legal-reading adapter merged in (artifact
    ``legal-reader``, :func:`course_utils.lora.load_or_build_legal_reader`), built if not cached."""
    from course_utils.lora import load_or_build_legal_reader

    return load_or_build_legal_reader(settings)


def endpoint_llm(base_url: str, model: str, api_key: str | None = None, max_new_tokens: int = 40,
                 timeout: float = 60.0):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server, Ollama,
    ``course serve``, a hosted API) as a LangChain chat model (langchain-openai's ``ChatOpenAI``, greedy), to
    draft in :func:`legal_chain` (with ``ChainModels(tokenizer=..., context=...)``). Only contacted when used."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=base_url.rstrip("/"), model=model, api_key=api_key or "not-needed", temperature=0,
                      max_tokens=max_new_tokens, timeout=timeout, max_retries=1)


def load_chain_models(drafter: str | None = None, *, reward: str | None = "course", judge: bool | str = False,
                      settings=None, max_new_tokens: int = 40) -> ChainModels:
    """The chain's models: the drafting LLM (a transformers folder or hub id; default the course's drafting
    model, :func:`default_drafter`), the reward model (``"course"``: notebook 06's, built if not cached; a
    folder; or ``None``) and, with ``judge``, an LLM judge (``True``: the DPO model; or a spec for
    :func:`course_utils.evaluation.make_judge`)."""
    from course_utils.rag_chain import load_llm
    from course_utils.settings import get_settings

    settings = settings or get_settings()
    path = drafter or default_drafter(settings)
    models = ChainModels(load_llm(path, max_new_tokens=max_new_tokens), names={"drafter": str(path)})
    if reward:
        from course_utils.reward import load_or_build_reward_model, load_reward_model

        rpath = load_or_build_reward_model(settings) if reward == "course" else reward
        models.reward_model, models.reward_tokenizer = load_reward_model(rpath)
        models.names["reward"] = str(rpath)
    if judge:
        from course_utils.evaluation import make_judge

        spec = "dpo" if judge is True else str(judge)
        models.judge = make_judge(spec, settings)
        models.names["judge"] = spec
    return models


# ----------------------------------------------------------------------------- retrieval

def article_labels(text: str) -> list[str]:
    """The article labels a text names, in order, without repeats: ``["Article 1", "Article 36"]``."""
    seen: dict[str, None] = {}
    for n in _LABEL.findall(text):
        seen.setdefault(f"Article {int(n)}", None)
    return list(seen)


def _applies(text: str, labels: Sequence[str]) -> bool:
    """Does a court report apply one of ``labels`` ("The court applied Article 1 and Article 36.")?"""
    applied = text.split("The court applied", 1)[-1].split(".", 1)[0] if "The court applied" in text else text
    return bool(set(article_labels(applied)) & set(labels))


def retrieve_legal(index: RagIndex, question: str, config: LegalChainConfig | None = None) -> dict[str, Any]:
    """Steps 1 and 2: ``{"question", "articles", "precedents"}``, each a list of ``index.search`` hits.

    Precedents: the ``depth`` court reports closest to the question, reordered so that a report
    named in the question comes first, then those applying a retrieved article, then the rest."""
    articles = retrieve_articles(index, question, config)
    return {"question": question, "articles": articles, "precedents": precedents_applying(index, question, articles, config)}


def retrieve_articles(index: RagIndex, question: str, config: LegalChainConfig | None = None) -> list[dict[str, Any]]:
    """Step 1: the ``k_articles`` articles of the legal code closest to ``question`` (hits with ``title``)."""
    cfg = config or LegalChainConfig()
    return _titled(index, index.search(question, cfg.k_articles, method=cfg.method, where={"kind": "article"}))


def _titled(index: RagIndex, hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Search hits with their document's ``title`` (a case name, "Article 1: False measures")."""
    pos = index.positions
    return [{**h, "title": index.chunks[pos[h["id"]]].meta.get("title")} if h["id"] in pos else h for h in hits]


def precedents_applying(index: RagIndex, question: str, articles: Sequence[dict[str, Any]],
                        config: LegalChainConfig | None = None) -> list[dict[str, Any]]:
    """Step 2: the court reports for ``question`` given the retrieved ``articles`` (see :func:`retrieve_legal`)."""
    cfg = config or LegalChainConfig()
    labels = [lab for h in articles for lab in article_labels(h.get("title") or h["text"])[:1]]
    cands = _titled(index, index.search(question, cfg.depth, method=cfg.method, where={"kind": "precedent"}))
    named = [h for h in cands if h.get("title") and h["title"] in question]
    citing = [h for h in cands if h not in named and _applies(h["text"], labels)]
    rest = [h for h in cands if h not in named and h not in citing]
    return (named + citing + rest)[:cfg.k_precedents]


def order_passages(retrieved: dict[str, Any]) -> list[dict[str, Any]]:
    """Step 3's order: a report named in the question first, else the best article; then the best of
    the other kind, then the rest (articles before reports)."""
    q, arts, precs = retrieved["question"], retrieved["articles"], retrieved["precedents"]
    if precs and precs[0].get("title") and precs[0]["title"] in q:
        return precs[:1] + arts[:1] + precs[1:] + arts[1:]
    return arts[:1] + precs[:1] + arts[1:] + precs[1:]


# ----------------------------------------------------------------------------- scores

def _key_words(answer: str, question: str) -> list[str]:
    q = {w.lower() for w in _WORD.findall(question)}
    return [w.lower() for w in _WORD.findall(answer)
            if (w[0].isupper() or w.isdigit()) and w.lower() not in q and w.lower() not in _CITE_STOP]


def grounding_score(answer: str, question: str, passages: Sequence[str]) -> float:
    """The share of the answer's information words (names and numbers that the question does not
    contain, as :func:`course_utils.scores.cite` counts them) that occur in the passages the model read.

    0.0 for an answer with no such word ("The passage does not say ...", an empty reply): it cites nothing,
    so it cannot be grounded. 1.0 means every name and number of the answer is in the passages."""
    key = _key_words(answer, question)
    if not key:
        return 0.0
    words = {w.lower() for p in passages for w in _WORD.findall(p)}
    return sum(k in words for k in key) / len(key)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def select_draft(scores: dict[str, Sequence[float]], selector: str) -> int:
    """The index of the draft that ``selector`` (a :data:`SELECTORS` key) picks: the highest mean of its
    scorers' scores, each in [0, 1] (the reward through a sigmoid); ties go to the earlier draft."""
    if selector not in SELECTORS:
        raise ValueError(f"Unknown selector {selector!r}: use one of {', '.join(SELECTORS)}.")
    names = SELECTORS[selector]
    if not names:
        return 0
    missing = [n for n in names if n not in scores]
    if missing:
        raise ValueError(f"Selector {selector!r} needs the {', '.join(missing)} score(s); the chain computed "
                         f"{', '.join(scores) or 'none'}.")
    n = len(scores[names[0]])
    total = [sum(_sigmoid(scores[s][i]) if s == "reward" else float(scores[s][i]) for s in names) / len(names)
             for i in range(n)]
    return int(np.argmax(total))


def citation_scores(cited_doc_ids: Sequence[str], gold_doc_ids: Sequence[str]) -> dict[str, float]:
    """Precision, recall and F1 of the cited documents against the gold ones (0 when nothing is cited)."""
    cited, gold = set(cited_doc_ids), set(gold_doc_ids)
    hit = len(cited & gold)
    p = hit / len(cited) if cited else 0.0
    r = hit / len(gold) if gold else 0.0
    return {"cite_precision": p, "cite_recall": r, "cite_f1": 2 * p * r / (p + r) if p + r else 0.0}


# ----------------------------------------------------------------------------- the chain

def legal_chain(index: RagIndex, models: ChainModels, config: LegalChainConfig | None = None) -> Runnable:
    """The legal chain in LCEL: a question string in, a dict out with ``question``, ``passages`` (the
    ones the model read: ``id``, ``doc_id``, ``text``), ``context``, ``drafts`` (text), ``scores``
    (``{scorer: [per draft]}``), ``best`` (index), ``answer``, ``cited_ids`` and ``cited_doc_ids``.

    Every step is named (``retrieve articles``, ``retrieve precedents``, ``context``, ``drafts`` with
    ``draft 1..3`` in parallel, ``scores`` with ``reward``/``grounding``/``judge`` in parallel, ``select``) so
    that a :class:`StepTrace` shows where the time goes."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import PromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

    from course_utils.rag_chain import chat_text, clean_reply, context_length

    cfg = config or LegalChainConfig()
    llm = models.llm
    local = hasattr(llm, "pipeline")  # a transformers pipeline (load_llm), else a chat model behind an endpoint
    if local:
        tok, ctx = llm.pipeline.tokenizer, context_length(llm)
    elif models.tokenizer is None:
        raise ValueError("An endpoint model needs ChainModels(tokenizer=..., context=...): a tokenizer that counts its "
                         "prompt's tokens (an approximate one will do) to fit the passages to its window.")
    else:
        tok, ctx = models.tokenizer, models.context

    def articles(question: str) -> dict[str, Any]:
        return {"question": question, "articles": retrieve_articles(index, question, cfg)}

    def precedents(x: dict[str, Any]) -> dict[str, Any]:
        return {**x, "precedents": precedents_applying(index, x["question"], x["articles"], cfg)}

    def context(x: dict[str, Any]) -> dict[str, Any]:
        ordered = order_passages(x)
        kept = fit_passages([h["text"] for h in ordered], x["question"], tok, ctx, cfg.max_new_tokens)
        passages = [{"id": h["id"], "doc_id": h["doc_id"], "text": h["text"]} for h in ordered[:len(kept)]]
        if kept and passages and kept[0] != passages[0]["text"]:
            passages[0] = {**passages[0], "text": kept[0]}  # the one passage was cut to fit
        return {"question": x["question"], "passages": passages, "context": " ".join(kept)}

    def draft(template: str, i: int):
        if local:  # the model's own chat template, as text
            to_chat = RunnableLambda(lambda p: chat_text(llm, p.to_string()), name="chat template")
        else:  # a chat model applies its template itself: send the user message
            to_chat = RunnableLambda(lambda p: [("user", p.to_string())], name="chat message")
        return (RunnableLambda(lambda x: {"context": x["context"], "question": x["question"]})
                | PromptTemplate.from_template(template) | to_chat | llm | StrOutputParser()
                | RunnableLambda(clean_reply, name="clean")).with_config(run_name=f"draft {i + 1}")

    n = len(cfg.prompts)
    drafts = (RunnableParallel({f"d{i}": draft(t, i) for i, t in enumerate(cfg.prompts)})
              | RunnableLambda(lambda d: [d[f"d{i}"] for i in range(n)], name="collect drafts"))

    def reward(x: dict[str, Any]) -> list[float]:
        from course_utils.reward import reward_scores

        conv = [{"role": "user", "content": x["question"]}]
        return reward_scores(models.reward_model, models.reward_tokenizer, [conv] * len(x["drafts"]), x["drafts"])

    def grounding(x: dict[str, Any]) -> list[float]:
        texts = [p["text"] for p in x["passages"]]
        return [grounding_score(d, x["question"], texts) for d in x["drafts"]]

    def judge(x: dict[str, Any]) -> list[float]:
        return judge_scores(models.judge, x["question"], x["drafts"])

    scorers: dict[str, Any] = {"grounding": RunnableLambda(grounding, name="grounding")}
    if models.reward_model is not None:
        scorers["reward"] = RunnableLambda(reward, name="reward")
    if cfg.judge:
        if models.judge is None:
            raise ValueError("LegalChainConfig(judge=True) needs ChainModels(judge=...).")
        scorers["judge"] = RunnableLambda(judge, name="judge")

    def select(x: dict[str, Any]) -> dict[str, Any]:
        best = select_draft(x["scores"], cfg.selector)
        answer = x["drafts"][best]
        cited = cite(answer, x["question"], x["passages"])
        docs = {p["id"]: p["doc_id"] for p in x["passages"]}
        return {**x, "best": best, "answer": answer, "cited_ids": cited,
                "cited_doc_ids": list(dict.fromkeys(docs[c] for c in cited))}

    return (RunnableLambda(articles, name="retrieve articles")
            | RunnableLambda(precedents, name="retrieve precedents")
            | RunnableLambda(context, name="context")
            | RunnablePassthrough.assign(drafts=drafts).with_config(run_name="drafts")
            | RunnablePassthrough.assign(scores=RunnableParallel(scorers)).with_config(run_name="scores")
            | RunnableLambda(select, name="select"))


def judge_scores(judge, question: str, drafts: Sequence[str]) -> list[float]:
    """P(GOOD) of each draft under the single-answer rubric of notebook 10 (:data:`course_utils.judge.RUBRIC_SINGLE`,
    without a reference), from the judge's scores of the two verdicts; a judge that only answers in text
    (an endpoint) gives 1.0 for GOOD, 0.0 for BAD, 0.5 for no verdict."""
    from course_utils.judge import RUBRIC_SINGLE

    prompts = [RUBRIC_SINGLE.format(question=question, answer=d, ref_clause="", ref_clause2="", reference_line="")
               for d in drafts]
    if hasattr(judge, "scores"):
        s = np.asarray(judge.scores(prompts, ["GOOD", "BAD"]), dtype=float)
        return [float(1.0 / (1.0 + math.exp(min(50.0, b - a)))) for a, b in s]
    return [0.5 if v is None else float(v.upper() == "GOOD") for v in judge.choose(prompts, ["GOOD", "BAD"])]


def ask_legal(question: str, index: RagIndex, models: ChainModels, config: LegalChainConfig | None = None
              ) -> dict[str, Any]:
    """One question through :func:`legal_chain`, traced: the answer, its citations, the drafts with their
    scores, and ``timings`` (seconds per named step, and ``total``). What ``course chain ask --json`` prints."""
    if not question or not question.strip():
        raise ValueError("Ask a question: the text is empty.")
    trace = StepTrace()
    t0 = time.perf_counter()
    out = legal_chain(index, models, config).invoke(question, config={"callbacks": [trace]})
    total = time.perf_counter() - t0
    steps = trace.table()
    top = steps[steps["depth"] == 1].groupby("name", sort=False)["seconds"].sum()
    return {"question": question, "answer": out["answer"], "cited_ids": out["cited_ids"],
            "cited_doc_ids": out["cited_doc_ids"], "best": out["best"],
            "drafts": [{"text": d, **{k: round(float(v[i]), 4) for k, v in out["scores"].items()}}
                       for i, d in enumerate(out["drafts"])],
            "passages": out["passages"], "selector": (config or LegalChainConfig()).selector,
            "models": models.names, "timings": {**{k: round(float(v), 4) for k, v in top.items()},
                                                "total": round(total, 4)}}


# ----------------------------------------------------------------------------- the trace

class StepTrace(BaseCallbackHandler):
    """A LangChain callback handler that records every runnable's start and end: name, parent, depth,
    inputs, outputs and seconds. Pass it as ``config={"callbacks": [trace]}``; :meth:`table` gives
    one row per step, :func:`plot_trace` the timeline."""

    raise_error = False

    def __init__(self) -> None:
        super().__init__()
        self.t0 = time.perf_counter()
        self.runs: dict[Any, dict[str, Any]] = {}

    def _start(self, run_id, parent_run_id, name: str, kind: str, inputs: Any) -> None:
        self.runs[run_id] = {"run_id": run_id, "parent": parent_run_id, "name": name, "kind": kind,
                             "start": time.perf_counter() - self.t0, "end": float("nan"),
                             "cpu_start": time.process_time(), "cpu": float("nan"),
                             "inputs": _short(inputs), "outputs": ""}

    def _end(self, run_id, outputs: Any) -> None:
        if run_id in self.runs:
            self.runs[run_id]["end"] = time.perf_counter() - self.t0
            self.runs[run_id]["cpu"] = time.process_time() - self.runs[run_id]["cpu_start"]
            self.runs[run_id]["outputs"] = _short(outputs)

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, **kw):  # noqa: D102
        name = kw.get("name") or (serialized or {}).get("name") or "chain"
        self._start(run_id, parent_run_id, name, "chain", inputs)

    def on_chain_end(self, outputs, *, run_id, **kw):  # noqa: D102
        self._end(run_id, outputs)

    def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, **kw):  # noqa: D102
        self._start(run_id, parent_run_id, kw.get("name") or "LLM", "llm", prompts)

    def on_llm_end(self, response, *, run_id, **kw):  # noqa: D102
        self._end(run_id, [g[0].text for g in response.generations])

    def on_chain_error(self, error, *, run_id, **kw):  # noqa: D102
        self._end(run_id, f"error: {error!r}")

    def on_llm_error(self, error, *, run_id, **kw):  # noqa: D102
        self._end(run_id, f"error: {error!r}")

    def table(self):
        """One row per recorded run: ``name, kind, depth, start, end, seconds, cpu, inputs, outputs``
        (``depth`` 0 is the whole chain, 1 its steps, ...; ``cpu`` the process's CPU-seconds while the step
        ran, so steps that overlap share theirs), in order of start."""
        import pandas as pd

        def depth(r):
            d, p = 0, r["parent"]
            while p in self.runs:
                d, p = d + 1, self.runs[p]["parent"]
            return d

        rows = [{**r, "depth": depth(r), "seconds": r["end"] - r["start"]} for r in self.runs.values()]
        cols = ["name", "kind", "depth", "start", "end", "seconds", "cpu", "inputs", "outputs"]
        return pd.DataFrame(rows, columns=cols + ["run_id", "parent"]).sort_values("start").reset_index(drop=True)[cols]


def _short(x: Any, n: int = 160) -> str:
    text = repr(x)
    return text if len(text) <= n else text[: n - 3] + "..."


def plot_trace(steps, ax=None, max_depth: int = 3, title: str = "One question through the chain",
               named_only: bool = True):
    """The trace as a timeline: one bar per step up to ``max_depth`` (time on the x axis), with its seconds;
    ``named_only`` leaves out LangChain's unnamed wrappers (their names start with "Runnable")."""
    import matplotlib.pyplot as plt

    rows = steps[(steps["depth"] >= 1) & (steps["depth"] <= max_depth)]
    if named_only:  # LangChain's own wrappers (RunnableParallel<...>, RunnableSequence, unnamed lambdas)
        rows = rows[~rows["name"].str.startswith("Runnable")]
    rows = rows.reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    colors = {1: "tab:blue", 2: "tab:orange", 3: "tab:green"}
    for i, r in rows.iterrows():
        ax.barh(i, r["seconds"], left=r["start"], color=colors.get(int(r["depth"]), "tab:gray"))
        ax.text(r["start"] + r["seconds"], i, f" {r['seconds'] * 1000:.0f} ms", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(["  " * (int(d) - 1) + n for n, d in zip(rows["name"], rows["depth"])], fontsize=8)
    ax.set_xlim(0, float((rows["start"] + rows["seconds"]).max()) * 1.15 if len(rows) else 1)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the question arrived")
    ax.set_title(title)
    return ax


# ----------------------------------------------------------------------------- measuring

def draft_table(questions: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]):
    """One row per (question, draft): the scores the chain computed and what the draft is worth against
    the gold answer (``em``, ``f1``, ``contains``) and gold documents (``cite_precision/recall/f1``:
    the passages the draft would cite)."""
    import pandas as pd

    from course_utils.metrics import score_answer
    from course_utils.scores import _golds

    rows = []
    for q, out in zip(questions, outputs):
        docs = {p["id"]: p["doc_id"] for p in out["passages"]}
        for i, d in enumerate(out["drafts"]):
            cited = list(dict.fromkeys(docs[c] for c in cite(d, q["question"], out["passages"])))
            rows.append({"id": q["id"], "kind": q["kind"], "draft": i, "reply": d,
                         **{k: float(v[i]) for k, v in out["scores"].items()},
                         **score_answer(d, _golds(q)), **citation_scores(cited, q["gold_doc_ids"])})
    return pd.DataFrame(rows)


def selector_table(drafts, selectors: Sequence[str] = tuple(SELECTORS), metrics=("contains", "em", "f1", "cite_f1"),
                   n_boot: int = 1000, seed: int = 0):
    """For each selector whose scorers are columns of ``drafts`` (add one to :data:`SELECTORS` to try it), the
    drafts it picks (one per question) and their mean ``metrics`` with 95% bootstrap intervals; plus ``oracle`` (a draft that contains the answer, if any: the most any selector
    can reach). Returns ``(summary, picks)``: ``summary`` a row per selector, ``picks`` the chosen rows."""
    import pandas as pd

    from course_utils.scores import bootstrap_ci

    picks = {}
    scorers = sorted({s for names in SELECTORS.values() for s in names} & set(drafts.columns))
    for sel in selectors:
        if any(s not in scorers for s in SELECTORS[sel]):
            continue
        chosen = []
        for _, g in drafts.groupby("id", sort=False):
            g = g.sort_values("draft")
            chosen.append(g.iloc[select_draft({s: list(g[s]) for s in scorers}, sel)])
        picks[sel] = pd.DataFrame(chosen)
    picks["oracle"] = drafts.sort_values(["contains", "cite_f1", "draft"], ascending=[False, False, True]
                                         ).groupby("id", sort=False).head(1)
    rows = []
    for sel, p in picks.items():
        row: dict[str, Any] = {"selector": sel, "n": len(p)}
        for m in metrics:
            est, lo, hi = bootstrap_ci(p[m].to_numpy(dtype=float), n_boot, 0.95, seed)
            row.update({m: est, f"{m}_low": lo, f"{m}_high": hi})
        rows.append(row)
    return pd.DataFrame(rows), picks


def cost_table(rows: Sequence[dict[str, Any]], cpu_hour_price: float, api_prices: tuple[float, float] | None = None):
    """Cost per 1,000 answers of each measured configuration.

    ``rows``: dicts with ``name``, ``cpu_seconds`` (per answer, process CPU time) and optionally
    ``tokens_in`` / ``tokens_out`` (per answer). ``cpu_hour_price``: the price of one CPU core for an hour;
    ``api_prices``: (input, output) price per million tokens of a hosted API, for comparison."""
    import pandas as pd

    out = []
    for r in rows:
        row = {**r, "cpu_cost_per_1000": 1000 * r["cpu_seconds"] * cpu_hour_price / 3600}
        if api_prices and "tokens_in" in r:
            row["api_cost_per_1000"] = 1000 * (r["tokens_in"] * api_prices[0] + r["tokens_out"] * api_prices[1]) / 1e6
        out.append(row)
    return pd.DataFrame(out)


def pareto(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (cost, quality) points, whether each is on the frontier: no other point is at most as costly
    and at least as good, and strictly better in one of the two."""
    flags = []
    for i, (c, q) in enumerate(points):
        dominated = any((c2 <= c and q2 >= q and (c2 < c or q2 > q)) for j, (c2, q2) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags
