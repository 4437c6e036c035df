"""RAG with LangChain: a FAISS vector store, an LCEL chain over the learner's SFT model, ``ask``.

Taught in notebook 08 (sections "LangChain" and "Closed-book vs RAG"); ``course rag ask``
calls :func:`ask`. Retrieval itself (FAISS, BM25, hybrid, metrics) is in
:mod:`course_utils.rag`.

- :func:`hf_embeddings` / :func:`langchain_vectorstore`: langchain-community's ``FAISS``
  store over ``HuggingFaceEmbeddings`` of the same sentence-transformers model, filled with
  the vectors already computed (no second encoding), inner product on unit vectors; for an
  index built with ``store="qdrant"``, langchain-qdrant's ``QdrantVectorStore`` over its collection.
- :func:`load_llm`: the SFT model (a transformers folder) as a langchain-huggingface
  ``HuggingFacePipeline`` (greedy, stops at the end of the assistant turn).
- :func:`rag_chain`: ``retriever | prompt | model | parser`` in LCEL; the prompt is the
  grounded layout the SFT set taught ("Read the passage and answer the question.
  Passage: ... Question: ..."), filled with as many retrieved passages as fit the
  model's context; the answer cites the ids of the passages that support it
  (:func:`cite`: passages containing the names and numbers of the answer that the question
  does not have;
  a small model cannot be trusted to copy ids, so citations are attributed, and checked,
  after generation).
- :func:`ask`: one question end to end, with timings; :func:`answer_questions` runs
  closed-book or RAG answers on evaluation questions through the evaluation harness
  (:func:`course_utils.evaluation.evaluate_chain`: exact match, F1, answer contained, the
  Ragas metrics, with bootstrap intervals).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course_utils.rag import RagIndex
from course_utils.supervised import READ_PROMPT
from course_utils.generation import fit_passages
from course_utils.scores import cite
from course_utils.tokenizer import escape_special_tokens

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

__all__ = [
    "PROMPT_TEMPLATE",
    "answer_questions",
    "ask",
    "chat_replies",
    "chat_text",
    "cite",
    "clean_reply",
    "closed_book_chain",
    "context_length",
    "fit_passages",
    "hf_embeddings",
    "langchain_vectorstore",
    "load_llm",
    "rag_chain",
    "text_replies",
]

#: The prompt of the SFT set's passage questions (``supervised.READ_PROMPT``), so the SFT
#: model reads the retrieved passages the way it learned to.
PROMPT_TEMPLATE = READ_PROMPT
END_OF_TURN = "<|end|>"


# ----------------------------------------------------------------------------- vector store

def hf_embeddings(name: str | None = None):
    """LangChain's ``HuggingFaceEmbeddings`` for the course embedder (unit vectors)."""
    from langchain_huggingface import HuggingFaceEmbeddings

    from course_utils.embed import embedder_path

    return HuggingFaceEmbeddings(model_name=embedder_path(name), encode_kwargs={"normalize_embeddings": True})


def langchain_vectorstore(index: RagIndex, embeddings=None):
    """LangChain's vector store over ``index``'s chunks and vectors: langchain-community's ``FAISS``
    for a FAISS index, langchain-qdrant's ``QdrantVectorStore`` over its collection for a Qdrant index
    (``IndexConfig(store="qdrant")``). Either way ``as_retriever()`` gives the same passages.

    Metadata of each LangChain ``Document``: ``id``, ``doc_id``, ``source``, ``position``
    and the chunk's other fields; scores are inner products (cosine similarity).
    """
    embeddings = embeddings or hf_embeddings(index.config.embedder)
    if index.config.store == "qdrant":
        return index.qdrant.langchain(embeddings)
    from langchain_community.vectorstores import FAISS
    from langchain_community.vectorstores.utils import DistanceStrategy

    pairs = [(c.text, v.tolist()) for c, v in zip(index.chunks, index.vectors)]
    metas = [{k: v for k, v in c.to_dict().items() if k != "text"} for c in index.chunks]
    return FAISS.from_embeddings(pairs, embeddings, metadatas=metas, ids=[c.id for c in index.chunks],
                                 distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)


# ----------------------------------------------------------------------------- the model

def load_llm(model: Any, tokenizer: Any = None, *, max_new_tokens: int = 48, batch_size: int = 8):
    """A causal LM as a LangChain ``HuggingFacePipeline``: greedy decoding, only the new text
    returned, stopping at ``<|end|>``. ``llm.pipeline.tokenizer`` is its tokenizer.

    ``model``: a transformers folder with a chat template (the SFT model), or a loaded
    model with its ``tokenizer`` (a peft model, such as notebook 05's LoRA adapter, is
    merged into a plain model first).
    """
    import torch
    from langchain_huggingface import HuggingFacePipeline
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    if isinstance(model, (str, Path)):
        path = Path(model).expanduser()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a transformers model folder (no config.json).")
        tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    elif tokenizer is None:
        raise ValueError("Pass the tokenizer with a loaded model: load_llm(model, tokenizer).")
    if hasattr(model, "merge_and_unload"):  # a peft model: fold the adapter into the weights
        model = model.merge_and_unload()
    model = model.eval()
    tok = tokenizer
    tok.padding_side = "left"  # batched generation: every prompt ends where generation starts
    end_ids = [i for i in (tok.convert_tokens_to_ids(END_OF_TURN), tok.eos_token_id)
               if i is not None and i != tok.unk_token_id]
    model.generation_config.eos_token_id = end_ids
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else end_ids[-1]
    pipe = pipeline("text-generation", model=model, tokenizer=tok, max_new_tokens=max_new_tokens,
                    do_sample=False, return_full_text=False, batch_size=batch_size)
    return HuggingFacePipeline(pipeline=pipe, batch_size=batch_size)


def context_length(llm) -> int:
    """The context window of the pipeline's model, in tokens."""
    cfg = llm.pipeline.model.config
    return int(getattr(cfg, "max_position_embeddings", None) or 2048)


def chat_text(llm, user: str) -> str:
    """``user`` wrapped in the model's chat template, ready for the assistant's reply."""
    tok = llm.pipeline.tokenizer  # the pipeline tokenizes text: a "<|end|>" in a page must not end the turn
    user = escape_special_tokens(user, tok)
    return tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)


def chat_replies(llm, conversations: list[list[dict[str, str]]]) -> list[str]:
    """Replies to whole conversations (system, user, assistant turns), in one batch: of a local pipeline
    (:func:`load_llm`: the chat template rendered here, so a forged marker left unescaped becomes a real special
    token) or of a LangChain chat model (an endpoint)."""
    if hasattr(llm, "pipeline"):
        tok = llm.pipeline.tokenizer
        return text_replies(llm, [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                                  for c in conversations])
    return [clean_reply(m.content) for m in llm.batch([[(x["role"], x["content"]) for x in c] for c in conversations])]


def text_replies(llm, prompts: list[str]) -> list[str]:
    """The replies of :func:`load_llm`'s pipeline to prompt texts already rendered (a chat template applied
    elsewhere, as :func:`course_utils.tools.render_prompt` does), in one batch, cut at the end of the turn."""
    return [clean_reply(t) for t in llm.batch(prompts)] if prompts else []


def clean_reply(text: str) -> str:
    """The reply up to the end of the assistant turn, without end-of-text marks."""
    return text.split(END_OF_TURN)[0].replace("<|endoftext|>", "").strip()


# ----------------------------------------------------------------------------- citations and scores

# ----------------------------------------------------------------------------- chains

def rag_chain(retriever: Runnable, llm, *, max_new_tokens: int = 48) -> Runnable:
    """The LCEL chain ``retriever | prompt | model | parser``, with citations.

    ``retriever`` maps a question to LangChain ``Document``s (metadata with ``id``);
    ``llm`` is :func:`load_llm`'s pipeline. The chain takes a question string and returns
    ``{"question", "docs", "context", "answer", "cited_ids"}``; ``context`` is the passage
    text the model was given (as many retrieved passages as fit, :func:`fit_passages`).
    """
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import PromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

    prompt = PromptTemplate.from_template(PROMPT_TEMPLATE)
    tok, ctx = llm.pipeline.tokenizer, context_length(llm)

    def context_of(x: dict) -> str:
        return " ".join(fit_passages([d.page_content for d in x["docs"]], x["question"], tok, ctx, max_new_tokens))

    fill = RunnableLambda(lambda x: {"context": x["context"], "question": x["question"]})
    to_chat = RunnableLambda(lambda p: chat_text(llm, p.to_string()))
    answer = fill | prompt | to_chat | llm | StrOutputParser() | RunnableLambda(clean_reply)

    def with_citations(x: dict) -> dict:
        passages = [{"id": d.metadata.get("id"), "text": d.page_content} for d in x["docs"]]
        return {**x, "cited_ids": cite(x["answer"], x["question"], passages)}

    return (RunnableParallel(docs=retriever, question=RunnablePassthrough())
            .assign(context=RunnableLambda(context_of)).assign(answer=answer)
            | RunnableLambda(with_citations))


def closed_book_chain(llm) -> Runnable:
    """The same model without retrieval: ``question -> chat prompt -> model -> parser``."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.runnables import RunnableLambda

    return RunnableLambda(lambda q: chat_text(llm, q)) | llm | StrOutputParser() | RunnableLambda(clean_reply)


def _index_retriever(index: RagIndex, k: int, method: str) -> Runnable:
    """A LangChain retriever (a Runnable question -> Documents) over any of ``index``'s methods."""
    from langchain_core.documents import Document
    from langchain_core.runnables import RunnableLambda

    def retrieve(question: str) -> list[Document]:
        return [Document(page_content=h["text"], metadata={k2: v for k2, v in h.items() if k2 != "text"})
                for h in index.search(question, k, method=method)]

    return RunnableLambda(retrieve)


def answer_questions(questions: list[dict], llm, index: RagIndex | None = None, *, k: int = 3,
                     method: str = "hybrid", max_new_tokens: int = 48, progress: bool = True, label: str | None = None,
                     seed: int = 0):
    """Answer evaluation questions closed-book (``index=None``) or with the RAG chain, scored by
    the evaluation harness (:func:`course_utils.evaluation.evaluate_chain`): an ``EvalResult``.

    ``result.table`` has a row per question (``reply``, ``em``, ``f1``, ``contains``, ROUGE,
    chrF ... and, with RAG, ``cited_ids``, ``cited_gold`` (a cited passage comes from a gold
    document), ``in_context`` (a gold answer is in the passages the model was given, after
    :func:`fit_passages`: the most RAG can reach if the model reads perfectly) and the Ragas
    metrics); ``result.summary`` every mean with its 95% bootstrap interval.
    """
    from course_utils.harness import EvalConfig, evaluate_chain

    if index is None:
        chain = closed_book_chain(llm)
    else:
        chain = rag_chain(_index_retriever(index, k, method), llm, max_new_tokens=max_new_tokens)
    cfg = EvalConfig(max_new_tokens=max_new_tokens, batch_size=max(1, llm.batch_size), k=k, method=method,
                     perplexity=False, relevancy=False, progress=progress, seed=seed)
    name = label or ("closed-book" if index is None else f"RAG ({method})")
    return evaluate_chain(chain, questions, label=name, index=index, config=cfg)


def ask(question: str, index: RagIndex, llm=None, *, k: int = 3, method: str = "hybrid",
        max_new_tokens: int = 48) -> dict[str, Any]:
    """Answer one question with RAG (or retrieval alone when ``llm`` is None).

    Returns ``question``, ``answer`` (None without a model), ``cited_ids``, ``retrieved``
    (``id``, ``doc_id``, ``source``, ``score``, ``rank``, ``text`` per chunk) and
    ``timings`` in seconds (``load_embedder``, ``retrieve``, ``generate``, ``total`` of the last two).
    """
    if not question or not question.strip():
        raise ValueError("Ask a question: the text is empty.")
    t_load = time.perf_counter()
    if method != "bm25":
        index.embedder  # load the embedding model now, so that "retrieve" times the search alone
    t0 = time.perf_counter()
    hits = index.search(question, k, method=method)
    t1 = time.perf_counter()
    result: dict[str, Any] = {"question": question, "answer": None, "cited_ids": [], "method": method,
                              "retrieved": hits}
    if llm is not None:
        from langchain_core.documents import Document
        from langchain_core.runnables import RunnableLambda

        docs = [Document(page_content=h["text"], metadata={"id": h["id"]}) for h in hits]
        out = rag_chain(RunnableLambda(lambda _q: docs), llm, max_new_tokens=max_new_tokens).invoke(question)
        result["answer"], result["cited_ids"] = out["answer"], out["cited_ids"]
    t2 = time.perf_counter()
    result["timings"] = {"load_embedder": round(t0 - t_load, 4), "retrieve": round(t1 - t0, 4), "generate": round(t2 - t1, 4), "total": round(t2 - t0, 4)}
    return result
