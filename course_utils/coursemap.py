"""The course map: every notebook, what it builds, and how long it takes.

Taught in notebook 00 (section "The course map"); the README's table is checked
against it by ``tests/test_readme.py``, so the two never drift. The CPU column is the
learner-mode time that ``make course`` measured (``results/times.json``, artifacts pre-built
by ``course prebuild``); a notebook not measured yet shows its estimate, marked ``~``, as does
the GPU column (estimates for one Colab-class GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from course_utils.settings import repo_root

__all__ = ["COURSE_MAP", "Module", "course_map_markdown", "update_readme"]


@dataclass(frozen=True)
class Module:
    """One notebook of the course."""

    number: str  # "00" .. "13": fixed, also the file prefix
    name: str  # file stem after the number, e.g. "llmops_overview"
    title: str  # what a person calls it
    builds: str  # what the learner builds and measures
    route: str  # "foundation", "fine-tune", "knowledge", "application", "quality"
    cpu_minutes: int  # estimate: learner mode on a 2-core CPU (the map shows the measured time where there is one)
    gpu_minutes: int  # estimate: learner mode on one Colab T4-class GPU

    @property
    def filename(self) -> str:
        return f"{self.number}_{self.name}.ipynb"

    @property
    def available(self) -> bool:
        """Whether the notebook exists in this checkout."""
        return (repo_root() / "notebooks" / self.filename).exists()


COURSE_MAP: tuple[Module, ...] = (
    Module("00", "llmops_overview", "The map: three routes and the pipeline",
           "the three routes and the pipeline as diagrams, an environment check, a first taste of retrieval",
           "foundation", 1, 1),
    Module("01", "tokenization", "Tokenization",
           "byte-level BPE from scratch, a fast trained tokenizer, Unicode round trips",
           "foundation", 1, 1),
    Module("02", "pretraining", "Pretraining a Llama-style model",
           "a decoder from scratch, a real training loop, checkpoints, export to transformers",
           "foundation", 20, 4),
    Module("03", "scale_and_moe", "Scale and mixture of experts",
           "MoE vs dense, multi-process training, efficient attention, mixed precision",
           "foundation", 10, 4),
    Module("04", "sft", "Supervised fine-tuning",
           "chat template, assistant-only loss, instruction tuning with trl",
           "fine-tune", 13, 2),
    Module("05", "lora_qlora", "LoRA and QLoRA",
           "LoRA from scratch vs peft, rank sweep, merge, NF4, teaching new facts",
           "fine-tune", 14, 2),
    Module("06", "reward_model_dpo", "Reward model and DPO",
           "Bradley-Terry reward model, DPO from scratch vs trl, win rate and KL, GRPO small",
           "fine-tune", 12, 3),
    Module("07", "data_preparation", "Data preparation",
           "cleanse, deduplicate and chunk raw HTML/Markdown/text; effect on retrieval",
           "knowledge", 5, 1),
    Module("08", "rag_faiss_langchain", "RAG with FAISS and LangChain",
           "embeddings, FAISS flat/IVF/HNSW, BM25 and hybrid, a cited LCEL chain; closed-book vs RAG",
           "knowledge", 4, 2),
    Module("09", "llm_chains", "LLM chains",
           "prompts measured; a legal chain: articles, precedents, three drafts, scored, the best with citations; "
           "model selection and routing by cost",
           "application", 3, 2),
    Module("10", "evaluation", "Evaluation",
           "EM/F1, ROUGE, BLEU, ROC-AUC, LLM-as-judge, RAG metrics, human feedback, one report",
           "quality", 9, 2),
    Module("11", "security", "Security",
           "an assistant with rules, attacked (injection, prompt leaking, jailbreaks, forged chat markers) and "
           "defended: six defences measured in one table; OWASP Top 10",
           "quality", 10, 3),
    Module("12", "agents", "Agents",
           "tools, a ReAct loop, function calling, multi-agent hand-off",
           "application", 10, 3),
    Module("13", "inference_serving", "Inference and serving",
           "KV cache, batching, quantization, speculative decoding, a chat page",
           "application", 10, 3),
)


def course_map_markdown(*, prefix: str = "notebooks/", times: dict[str, dict] | None = None) -> str:
    """The course map as a Markdown table (used in notebook 00, the README and the site).

    ``prefix`` is the path from the page that shows the table to ``notebooks/``:
    ``"notebooks/"`` from the README, ``""`` from a notebook. ``times``: the measured learner-mode
    times (default ``results/times.json``, :func:`course_utils.runbook.load_times`).
    """
    if times is None:
        from course_utils.runbook import load_times

        times = load_times()
    rows = [
        "| # | notebook | what you build | CPU | GPU | status |",
        "|---|---|---|---:|---:|---|",
    ]
    for m in COURSE_MAP:
        name = f"[{m.title}]({prefix}{m.filename})" if m.available else m.title
        status = "ready" if m.available else "coming"
        measured = times.get(m.number)
        cpu = f"{float(measured['minutes']):.1f} min" if measured else f"~{m.cpu_minutes} min"
        rows.append(f"| {m.number} | {name} | {m.builds} | {cpu} | ~{m.gpu_minutes} min | {status} |")
    return "\n".join(rows)


_START, _END = "<!-- course-map:start -->\n", "\n<!-- course-map:end -->"


def update_readme(path: Path | None = None) -> bool:
    """Rewrite the course map between the README's markers; return whether it changed."""
    path = path or repo_root() / "README.md"
    text = path.read_text()
    if _START not in text or _END not in text:
        raise ValueError(f"{path} has no course-map markers ({_START.strip()} ... {_END.strip()}).")
    head, rest = text.split(_START, 1)
    _, tail = rest.split(_END, 1)
    new = f"{head}{_START}{course_map_markdown()}{_END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text
