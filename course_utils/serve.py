"""An OpenAI-compatible chat service over a course model: ``/v1/chat/completions`` (streamed as server-sent
events or not) and ``/v1/models``, with continuous batching of concurrent requests.

Taught in notebook 13 and run by ``course serve``. The model folder is a transformers ``LlamaForCausalLM``
with a chat template (the course's SFT model by default); it runs as the course's own ``GPT``
(:func:`course_utils.hf.gpt_from_llama`) under :class:`course_utils.inference.BatchEngine`: one worker
thread steps the engine, requests join the running batch between two steps and leave it when they finish,
and each request's tokens reach its handler through an asyncio queue. The official ``openai`` client and
LangChain's ``ChatOpenAI`` talk to it unchanged (``base_url="http://127.0.0.1:8000/v1"``). ``/`` is a chat
page (replies streamed as they come, the conversation kept, a thumbs up or down under each answer written
to the feedback store of notebook 10 through ``/feedback``).

With an index (``ChatService(..., index=DIR)``, ``course serve --index DIR``), every request is answered with
retrieval, as notebook 08's chain does: the last user message is the question, the index's passages that fit
the context go into the grounded prompt the SFT model learned ("Read the passage and answer the question.
Passage: ... Question: ..."), and the response carries two fields beside OpenAI's: ``passages`` (the
passages the model was given: ``id``, ``doc_id``, ``source``, ``text``) and ``citations`` (the ids of those
that support the answer, :func:`course_utils.scores.cite`); a streamed reply carries them in its last chunk.
The chat page shows them under the answer.

Bad requests get a 4xx with an OpenAI-style body (``{"error": {"message", "type", "param", "code"}}``)
and the service keeps serving.
"""


import asyncio
import json
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ChatService", "create_app", "free_port", "load_test", "serve", "start_in_thread"]

ROLES = ("system", "user", "assistant")


class RequestError(Exception):
    """A request the service refuses: an HTTP status and an OpenAI-style error."""

    def __init__(self, status: int, message: str, param: "str | None" = None, code: "str | None" = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class _Job:
    prompt: list[int]
    max_tokens: int
    sampling: Any
    deliver: Any  # callable(token or None, finished) run in the event loop
    seq_id: int | None = None
    tokens: list[int] = field(default_factory=list)
    error: str | None = None  # set when the engine failed while this request was in it


class ChatService:
    """A model folder served through a :class:`~course_utils.inference.BatchEngine` of ``slots`` rows."""

    def __init__(self, model_dir: "str | Path", *, slots: int = 8, name: "str | None" = None,
                 feedback: "str | Path | None" = None, index: Any = None, k: int = 3, method: str = "hybrid"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from course_utils.generation import end_ids
        from course_utils.hf import gpt_from_llama
        from course_utils.inference import BatchEngine

        path = Path(model_dir)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a transformers model folder (no config.json).")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if not self.tokenizer.chat_template:
            raise ValueError(f"{path} has no chat template: serve a chat model (the course's SFT or DPO model).")
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if type(hf).__name__ != "LlamaForCausalLM":
            raise ValueError(f"{path} holds a {type(hf).__name__}; the course service runs Llama-style models.")
        self.model = gpt_from_llama(hf)
        self.name = name or path.name
        self.feedback_path = feedback  # the chat page's ratings (None: the course's default store)
        if index is not None and not hasattr(index, "search"):
            from course_utils.rag import RagIndex

            index = RagIndex.load(index)
        self.index, self.k, self.method = index, k, method  # retrieval for every request (None: none)
        self.context = self.model.cfg.max_seq_len
        self.engine = BatchEngine(self.model, slots=slots)
        self.stop = set(end_ids(self.tokenizer))
        self._waiting: queue.Queue[_Job] = queue.Queue()
        self._jobs: dict[int, _Job] = {}
        self._wake = threading.Event()
        self._closed = False
        self.steps = 0
        self._thread = threading.Thread(target=self._loop, name="course-serve-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the engine's thread
    def _loop(self) -> None:
        from course_utils.inference import BatchEngine

        while not self._closed:
            try:
                self._turn()
            except Exception as exc:  # noqa: BLE001  (a failed step fails its requests, not the service)
                print(f"[serve] the engine failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                jobs, self._jobs = list(self._jobs.values()), {}
                self.engine = BatchEngine(self.model, slots=self.engine.cache.mask.shape[0])
                for job in jobs:
                    job.error = f"{type(exc).__name__}: {exc}"
                    job.deliver(None, True)

    def _turn(self) -> None:
        """Admit waiting requests into free rows, then one step for every live sequence."""
        while self.engine.free_slots and not self._waiting.empty():
            job = self._waiting.get()
            self._jobs[-1] = job  # failed in add(): still answered
            job.seq_id = self.engine.add(job.prompt, job.max_tokens, job.sampling, self.stop)
            self._jobs[job.seq_id] = self._jobs.pop(-1)
        if not self.engine.sequences:
            self._wake.wait(0.05)
            self._wake.clear()
            return
        for seq_id, tok, finished in self.engine.step():
            job = self._jobs[seq_id]
            if finished:
                del self._jobs[seq_id]
            job.deliver(None if tok in self.stop else tok, finished)
        self.steps += 1

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ requests
    def prompt_ids(self, messages: Any) -> list[int]:
        """The prompt of ``messages`` (checked) in the model's chat template, ready for the reply."""
        from course_utils.tokenizer import encode_chat

        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list of {role, content} objects.", "messages")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise RequestError(400, f"messages[{i}] must have a role ({', '.join(ROLES)}) and text content.",
                                   f"messages[{i}]")
        return encode_chat(self.tokenizer, [{"role": m["role"], "content": m["content"]} for m in messages],
                           add_generation_prompt=True)

    def ground(self, messages: Any, max_tokens: int) -> "tuple[Any, list[dict[str, Any]] | None]":
        """With an index: ``messages`` with the last user turn rewritten as the grounded prompt over the
        retrieved passages that fit the context with ``max_tokens`` to spare, and those passages. Without
        one: ``(messages, None)``."""
        if self.index is None or not isinstance(messages, list) or not messages:
            return messages, None
        from course_utils.generation import fit_passages
        from course_utils.supervised import READ_PROMPT

        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "user" or not isinstance(last.get("content"), str) \
                or not last["content"].strip():
            return messages, None  # prompt_ids says what is wrong with it
        question = last["content"].strip()
        hits = self.index.search(question, self.k, method=self.method)
        kept = fit_passages([h["text"] for h in hits], question, self.tokenizer, self.context, max_tokens)
        passages = [{key: h.get(key) for key in ("id", "doc_id", "source")} | {"text": text}
                    for h, text in zip(hits, kept)]
        prompt = READ_PROMPT.format(context=" ".join(kept), question=question)
        return [*messages[:-1], {"role": "user", "content": prompt}], passages

    def submit(self, prompt: list[int], max_tokens: int, sampling: Any, deliver) -> _Job:
        job = _Job(prompt, max_tokens, sampling, deliver)
        self._waiting.put(job)
        self._wake.set()
        return job


def _sampling(body: dict[str, Any]):
    from course_utils.inference import Sampling

    def number(key: str, default: float, lo: float, hi: float) -> float:
        value = body.get(key, default)
        value = default if value is None else value
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
            raise RequestError(400, f"{key} must be a number between {lo} and {hi}.", key)
        return float(value)

    temperature = number("temperature", 1.0, 0.0, 2.0)
    top_p = number("top_p", 1.0, 1e-9, 1.0)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError(400, "seed must be an integer.", "seed")
    return Sampling(temperature=temperature, top_p=None if top_p >= 1 else top_p, seed=seed)


def create_app(service: ChatService):
    """The FastAPI application of ``service``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

    app = FastAPI(title="course serve", description="An OpenAI-compatible chat service over a course model.")
    app.state.service = service

    @app.exception_handler(RequestError)
    async def refused(_request: Request, exc: RequestError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        return JSONResponse(RequestError(400, "The request body is not valid JSON.").body(), status_code=400)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return (Path(__file__).parent / "static" / "chat.html").read_text(encoding="utf-8")

    async def json_body(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError(400, "The request body is not valid JSON.") from None

    @app.post("/feedback")
    async def feedback(request: Request):
        from course_utils.feedback import FeedbackStore

        body = await json_body(request)
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("prompt", "answer")):
            raise RequestError(400, "A rating needs the prompt and the answer as text.")
        if body.get("rating") not in (1, -1):
            raise RequestError(400, "rating is 1 (thumbs up) or -1 (thumbs down).", "rating")
        store = FeedbackStore(service.feedback_path)
        row = store.add(service.name, body["prompt"], body["answer"], body["rating"], rater="human")
        return {"id": row, "store": str(store.path)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": service.name, "object": "model", "created": 0,
                                            "owned_by": "course"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await json_body(request)
        if not isinstance(body, dict):
            raise RequestError(400, "The request body must be a JSON object.")
        if body.get("model") not in (service.name, None):
            raise RequestError(404, f"The model {body.get('model')!r} does not exist; this service serves "
                                    f"{service.name!r} (GET /v1/models).", "model", "model_not_found")
        asked = body.get("max_tokens", body.get("max_completion_tokens"))
        messages, passages = body.get("messages"), None
        if service.index is not None:  # retrieval (an embedding and a search) off the event loop
            budget = asked if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else 48
            messages, passages = await asyncio.get_running_loop().run_in_executor(
                None, service.ground, messages, budget)
        prompt = service.prompt_ids(messages)
        room = service.context - len(prompt)
        if room < 1:
            raise RequestError(400, f"The prompt has {len(prompt)} tokens and the model's context is "
                                    f"{service.context}: no room for a reply. Shorten the conversation.",
                               "messages", "context_length_exceeded")
        max_tokens = asked
        if max_tokens is None:
            max_tokens = min(128, room)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise RequestError(400, "max_tokens must be a positive integer.", "max_tokens")
        if max_tokens > room:
            raise RequestError(400, f"The prompt has {len(prompt)} tokens and the model's context is "
                                    f"{service.context}: at most {room} new tokens fit, {max_tokens} asked.",
                               "messages", "context_length_exceeded")
        sampling = _sampling(body)
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue = asyncio.Queue()
        job = service.submit(prompt, max_tokens, sampling,
                             lambda tok, finished: loop.call_soon_threadsafe(tokens.put_nowait, (tok, finished)))
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        tok = service.tokenizer

        def grounding(answer: str) -> dict[str, Any]:
            """The passages the model read and the ids of those that support ``answer`` (with an index)."""
            if passages is None:
                return {}
            from course_utils.scores import cite

            original = body["messages"][-1]["content"].strip()
            return {"passages": passages, "citations": cite(answer, original, passages)}

        def chunk(delta: dict[str, Any], finish: str | None, extra: "dict[str, Any] | None" = None) -> str:
            return "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                          "model": service.name, "choices": [{"index": 0, "delta": delta,
                                                                              "finish_reason": finish}],
                                          **(extra or {})}) + "\n\n"

        if body.get("stream"):
            async def events():
                ids: list[int] = []
                sent = ""
                yield chunk({"role": "assistant", "content": ""}, None)
                while True:
                    t, finished = await tokens.get()
                    if t is not None:
                        ids.append(t)
                        text = tok.decode(ids, skip_special_tokens=True)
                        if not text.endswith("\ufffd"):  # a character cut between two tokens waits for the next
                            if len(text) > len(sent):
                                yield chunk({"content": text[len(sent):]}, None)
                            sent = text
                    if finished:
                        if job.error:
                            err = RequestError(500, f"The model failed: {job.error}", kind="server_error")
                            yield "data: " + json.dumps(err.body()) + "\n\n"
                        else:
                            yield chunk({}, "stop" if t is None else "length", grounding(sent))
                        yield "data: [DONE]\n\n"
                        return

            return StreamingResponse(events(), media_type="text/event-stream")

        ids, reason = [], "length"
        while True:
            t, finished = await tokens.get()
            if t is not None:
                ids.append(t)
            if finished:
                reason = "stop" if t is None else "length"
                break
        if job.error:
            raise RequestError(500, f"The model failed: {job.error}", kind="server_error")
        answer = tok.decode(ids, skip_special_tokens=True)
        return {"id": rid, "object": "chat.completion", "created": created, "model": service.name,
                "choices": [{"index": 0, "finish_reason": reason, "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(ids) + (reason == "stop"),
                          "total_tokens": len(prompt) + len(ids) + (reason == "stop")},
                **grounding(answer)}

    return app


def load_test(url: str, questions: list[str], concurrency: int, max_tokens: int = 32,
             timeout: float = 120.0) -> dict[str, Any]:
    """A load test of a chat service at ``url``: one greedy request per question, sent by ``concurrency``
    clients at once (each sends its next when its answer is in). Returns requests/s, tokens/s, latency
    p50/p95 (seconds) and the errors (a failed request is counted, never raised)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    def ask(client: httpx.Client, question: str) -> tuple[float, int, str | None]:
        t0 = time.perf_counter()
        try:
            r = client.post(url + "/v1/chat/completions", timeout=timeout,
                            json={"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
                                  "temperature": 0})
            if r.status_code != 200:
                return time.perf_counter() - t0, 0, f"{r.status_code}: {r.text[:200]}"
            return time.perf_counter() - t0, int(r.json()["usage"]["completion_tokens"]), None
        except httpx.HTTPError as exc:
            return time.perf_counter() - t0, 0, repr(exc)

    start = time.perf_counter()
    with httpx.Client() as client, ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda q: ask(client, q), questions))
    wall = time.perf_counter() - start
    latencies = sorted(r[0] for r in results if r[2] is None)
    errors = [r[2] for r in results if r[2] is not None]

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 3) if latencies else float("nan")

    tokens = sum(r[1] for r in results)
    return {"concurrency": concurrency, "requests": len(questions), "errors": len(errors),
            "first_error": errors[0] if errors else None, "seconds": round(wall, 2),
            "requests_per_s": round(len(questions) / wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "latency_p50": pct(0.5), "latency_p95": pct(0.95)}


def free_port() -> int:
    """A free TCP port on loopback."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_in_thread(service: ChatService, timeout: float = 60.0):
    """``service``'s app on a free loopback port, served by uvicorn in a daemon thread (tests, benchmarks,
    notebook 13): ``(url, stop)``, where ``stop()`` shuts the server down."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + timeout
    while not server.started and time.time() < deadline:
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return f"http://127.0.0.1:{port}", stop


def serve(model: str = "sft", *, host: str = "127.0.0.1", port: int = 8000, slots: int = 8, settings=None,
          index: "str | None" = None, k: int = 3, say=print) -> "dict[str, Any]":
    """Serve ``model`` (``sft``, ``dpo`` or a model folder) until interrupted (Ctrl-C); what ``course serve``
    runs. The course's models are built first if they are not cached. ``index``: answer with retrieval from
    an index folder (``course rag index``), or ``"course"`` for the course's own index (notebook 08)."""
    import uvicorn

    from course_utils.settings import get_settings

    settings = settings or get_settings()
    if model == "sft":
        from course_utils.sft import load_or_build_sft_model

        path = load_or_build_sft_model(settings)
    elif model == "dpo":
        from course_utils.dpo import load_or_build_dpo_model

        path = load_or_build_dpo_model(settings)
    else:
        path = Path(model).expanduser()
    rag_index = None
    if index == "course":
        from course_utils.rag import load_or_build_index

        rag_index = load_or_build_index(settings=settings)
    elif index is not None:
        if not (Path(index) / "chunks.jsonl").exists():
            raise FileNotFoundError(f"{index} is not an index folder: build one with `course rag index DOCS --out DIR`, "
                                    f"or use --index course.")
        rag_index = index
    service = ChatService(path, slots=slots, name=model if model in ("sft", "dpo") else None, index=rag_index, k=k)
    say(f"[serve] {service.name} ({path}) on http://{host}:{port}/v1 — context {service.context} tokens, "
        f"{slots} rows per batch{f', {k} passages retrieved per question' if rag_index is not None else ''}; "
        f"the chat page: http://{host}:{port}/ ; Ctrl-C stops it")
    started = time.time()
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
    finally:
        service.close()
    return {"model": service.name, "path": str(path), "url": f"http://{host}:{port}/v1", "steps": service.steps,
            "rag": rag_index is not None, "seconds": round(time.time() - started, 1)}
