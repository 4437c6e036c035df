"""The chat service (course_utils.serve, notebook 13): OpenAI-compatible answers, streamed and not, equal to
the model's own greedy reply; bad requests get a 4xx with an OpenAI-style body and the service keeps
serving; concurrent requests are batched; the official openai client talks to it over HTTP."""

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from course_utils.inference import generate
from course_utils.serve import ChatService, create_app, free_port, start_in_thread
from tests.test_sft import tiny_model_folder

QUESTION = [{"role": "user", "content": "Where was Orin Tallow born?"}]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = ChatService(tiny_model_folder(tmp_path_factory.mktemp("serve") / "model"), slots=2, name="tiny-chat")
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def client(service):
    from fastapi.testclient import TestClient

    return TestClient(create_app(service))


def _greedy_reply(service, messages, n):
    prompt = service.prompt_ids(messages)
    ids = generate(service.model, torch.tensor([prompt]), n)[0, len(prompt):].tolist()
    stop = next((i for i, t in enumerate(ids) if t in service.stop), None)
    return service.tokenizer.decode(ids[:stop], skip_special_tokens=True), stop


def test_a_reply_is_the_models_greedy_reply(client, service):
    r = client.post("/v1/chat/completions", json={"model": "tiny-chat", "messages": QUESTION, "max_tokens": 12,
                                                  "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    text, stop = _greedy_reply(service, QUESTION, 12)
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == text
    assert body["choices"][0]["finish_reason"] == ("length" if stop is None else "stop")
    assert body["usage"]["prompt_tokens"] == len(service.prompt_ids(QUESTION))
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-chat"


def test_a_streamed_reply_is_the_same_text_in_pieces(client):
    payload = {"model": "tiny-chat", "messages": QUESTION, "max_tokens": 12, "temperature": 0}
    whole = client.post("/v1/chat/completions", json=payload).json()["choices"][0]["message"]["content"]
    with client.stream("POST", "/v1/chat/completions", json={**payload, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_stop_token_ends_the_reply(client, service):
    prompt = service.prompt_ids(QUESTION)
    first = int(generate(service.model, torch.tensor([prompt]), 1)[0, -1])
    service.stop.add(first)  # the reply's first token now ends it
    try:
        body = client.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 12,
                                                         "temperature": 0}).json()
    finally:
        service.stop.discard(first)
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize("payload, status, words", [
    (b"{not json", 400, "not valid JSON"),
    ([1, 2], 400, "JSON object"),
    ({"model": "gpt-9", "messages": QUESTION}, 404, "does not exist"),
    ({"messages": []}, 400, "non-empty list"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ({"messages": [{"role": "user", "content": 3}]}, 400, "content"),
    ({"messages": QUESTION, "max_tokens": 0}, 400, "positive integer"),
    ({"messages": QUESTION, "max_tokens": 10_000}, 400, "context"),
    ({"messages": [{"role": "user", "content": "word " * 400}]}, 400, "context"),
    ({"messages": QUESTION, "temperature": 5}, 400, "temperature"),
    ({"messages": QUESTION, "top_p": 0}, 400, "top_p"),
])
def test_bad_requests_get_an_openai_style_error_and_the_service_keeps_serving(client, payload, status, words):
    if isinstance(payload, bytes):
        r = client.post("/v1/chat/completions", content=payload, headers={"content-type": "application/json"})
    else:
        r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"] and error["type"] == "invalid_request_error"
    ok = client.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 3})
    assert ok.status_code == 200


def test_concurrent_requests_share_the_engines_steps(client, service):
    questions = [[{"role": "user", "content": f"Who founded town number {i}?"}] for i in range(6)]
    expected = [_greedy_reply(service, q, 10)[0] for q in questions]
    before = service.steps

    def ask(q):
        return client.post("/v1/chat/completions", json={"messages": q, "max_tokens": 10, "temperature": 0}).json()

    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(ask, questions))
    assert [r["choices"][0]["message"]["content"] for r in replies] == expected
    tokens = sum(r["usage"]["completion_tokens"] for r in replies)
    assert service.steps - before < tokens  # two rows per step: fewer steps than tokens


def test_the_openai_client_talks_to_the_service_over_http(live, service):
    from openai import BadRequestError, OpenAI

    api = OpenAI(base_url=f"{live}/v1", api_key="not-needed", max_retries=0, timeout=30)
    assert [m.id for m in api.models.list()] == ["tiny-chat"]
    reply = api.chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=12, temperature=0)
    assert reply.choices[0].message.content == _greedy_reply(service, QUESTION, 12)[0]
    stream = api.chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=12, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == reply.choices[0].message.content
    with pytest.raises(BadRequestError, match="max_tokens"):
        api.chat.completions.create(model="tiny-chat", messages=QUESTION, max_tokens=0)


def test_course_serve_starts_answers_and_stops_on_ctrl_c(service, tmp_path):
    import signal
    import subprocess
    import sys
    import urllib.request

    folder = tiny_model_folder(tmp_path / "model")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "course_utils.cli", "serve", "--model", str(folder), "--port",
                             str(port), "--slots", "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline, models = time.time() + 120, None
        while models is None and time.time() < deadline and proc.poll() is None:
            try:
                models = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2))
            except OSError:
                time.sleep(0.3)
        assert models is not None, proc.stderr.read() if proc.poll() is not None else "no answer in 120 s"
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", method="POST",
                                         data=json.dumps({"messages": QUESTION, "max_tokens": 4}).encode(),
                                         headers={"content-type": "application/json"})
        reply = json.load(urllib.request.urlopen(request, timeout=30))
        assert reply["model"] == models["data"][0]["id"] == "model"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"on http://127.0.0.1:{port}/v1" in err and json.loads(out.splitlines()[-1])["steps"] >= 4


def _chromium() -> str | None:
    import os
    import shutil

    return os.environ.get("CHROME_PATH") or next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
         if shutil.which(n)), None)


def _chromium_or_skip() -> str:
    """The browser for the chat page's tests: a failure on CI (which installs it), a skip elsewhere."""
    import os

    chrome = _chromium()
    if chrome is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium for the chat page's test: .ci/run installs it with `make chromium`")
        pytest.skip("no Chromium or Chrome here: `make chromium` installs it")
    return chrome


@contextlib.contextmanager
def _chat_page_answer(url: str, model: str, question: str):
    """Headless Chromium on the chat page at ``url`` (serving ``model``): ``question`` asked, the page yielded once
    the whole answer has streamed in."""
    from playwright.sync_api import sync_playwright

    chrome = _chromium_or_skip()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chrome, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.wait_for_function(f"document.getElementById('model').textContent === {json.dumps(model)}")
            page.fill("#question", question)
            page.click("#send")
            page.wait_for_selector(".assistant[data-done='true']", timeout=60_000)
            yield page
        finally:
            browser.close()


@pytest.fixture
def live(service, tmp_path):
    """The app on a free loopback port, its ratings in a fresh store."""
    service.feedback_path = tmp_path / "ratings.sqlite"
    url, stop = start_in_thread(service)
    yield url
    stop()
    service.feedback_path = None


def test_the_chat_page_streams_an_answer_and_stores_a_rating(live, service):
    """In headless Chromium: type a question, see the streamed answer, rate it, find the rating in the store."""
    from course_utils.feedback import FeedbackStore

    question = QUESTION[0]["content"]
    expected = _greedy_reply(service, QUESTION, 64)[0]
    with _chat_page_answer(live, "tiny-chat", question) as page:
        assert page.inner_text(".user") == question
        assert page.inner_text(".assistant > span") == expected
        page.click(".assistant .up")
        page.wait_for_function("document.querySelector('.saved').textContent.startsWith('saved')")
    rows = FeedbackStore(service.feedback_path).ratings(rater="human")
    assert len(rows) == 1 and rows.iloc[0]["prompt"] == question and rows.iloc[0]["answer"] == expected
    assert rows.iloc[0]["rating"] == 1 and rows.iloc[0]["model"] == "tiny-chat"


def test_a_bad_rating_is_refused(client):
    r = client.post("/feedback", json={"prompt": "q", "answer": "a", "rating": 5})
    assert r.status_code == 400 and "thumbs" in r.json()["error"]["message"]
    assert "Course chat" in client.get("/").text


def test_the_load_test_counts_requests_tokens_and_errors(live, service):
    from course_utils.serve import load_test

    questions = [f"Who founded town number {i}?" for i in range(12)]
    one = load_test(live, questions, concurrency=1, max_tokens=8)
    four = load_test(live, questions, concurrency=4, max_tokens=8)
    for row in (one, four):
        assert row["requests"] == 12 and row["errors"] == 0 and row["tokens_per_s"] > 0
        assert row["latency_p50"] <= row["latency_p95"]
    bad = load_test(live, ["x" * 3000], concurrency=1)  # far over the context: counted as an error, not raised
    assert bad["errors"] == 1 and bad["first_error"].startswith("400")


def test_langchains_openai_chat_model_runs_a_chain_against_the_service(live, service):
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=live + "/v1", api_key="not-needed", model="tiny-chat", temperature=0, max_tokens=12,
                     max_retries=0)
    chain = ChatPromptTemplate.from_messages([("user", "Where was {name} born?")]) | llm | StrOutputParser()
    assert chain.invoke({"name": "Orin Tallow"}) == _greedy_reply(service, QUESTION, 12)[0]
    assert "".join(chain.stream({"name": "Orin Tallow"})) == _greedy_reply(service, QUESTION, 12)[0]


def test_a_failing_step_fails_its_request_and_the_service_goes_on(client, service, monkeypatch):
    engine = service.engine
    real = type(engine).step
    calls = []

    def broken(self):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory in the attention")
        return real(self)

    monkeypatch.setattr(type(engine), "step", broken)
    r = client.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 4})
    assert r.status_code == 500 and "out of memory" in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "server_error"
    ok = client.post("/v1/chat/completions", json={"messages": QUESTION, "max_tokens": 4, "temperature": 0})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == _greedy_reply(service, QUESTION, 4)[0]


@pytest.fixture(scope="module")
def rag_service(tmp_path_factory):
    """The tiny chat model over a five-passage index (the passages of tests/test_rag.py)."""
    from course_utils.embed import embed, load_embedder
    from course_utils.prep import Chunk
    from course_utils.rag import IndexConfig, RagIndex
    from tests.test_rag import FACTS

    embedder = load_embedder(device="cpu")
    chunks = [Chunk(id=f"{d}#0", text=t, doc_id=d, source=f"docs/{d}.txt", position=0, meta={}) for d, t in FACTS]
    index = RagIndex(chunks, embed([c.text for c in chunks], embedder), IndexConfig(), embedder=embedder)
    svc = ChatService(tiny_model_folder(tmp_path_factory.mktemp("rag") / "model"), slots=2, name="tiny-rag",
                      index=index, k=2, method="dense")
    yield svc
    svc.close()


def test_with_an_index_the_model_reads_the_retrieved_passages_and_the_answer_cites_them(rag_service, service):
    from fastapi.testclient import TestClient

    from course_utils.scores import cite

    client = TestClient(create_app(rag_service))
    question = [{"role": "user", "content": "Where was Warath Trernbri born?"}]
    payload = {"messages": question, "max_tokens": 8, "temperature": 0}
    body = client.post("/v1/chat/completions", json=payload).json()
    grounded, passages = rag_service.ground(question, 8)
    assert body["passages"] == passages and passages[0]["id"] == "person-1#0"  # the passage that answers it
    prompt = grounded[-1]["content"]
    assert prompt.startswith("Read the passage and answer the question.") and "born in Kithka" in prompt
    assert prompt.endswith("Question: Where was Warath Trernbri born?")
    assert body["usage"]["prompt_tokens"] == len(rag_service.prompt_ids(grounded))  # the model read the passages
    answer = body["choices"][0]["message"]["content"]
    assert answer == _greedy_reply(rag_service, grounded, 8)[0]
    assert body["citations"] == cite(answer, question[0]["content"], passages)
    with client.stream("POST", "/v1/chat/completions", json={**payload, "stream": True}) as r:
        chunks = [json.loads(line.removeprefix("data: ")) for line in r.iter_lines() if line and line != "data: [DONE]"]
    assert chunks[-1]["passages"] == passages and chunks[-1]["citations"] == body["citations"]
    assert all("passages" not in c for c in chunks[:-1])
    # a service without an index answers closed-book: no passages, no citations
    assert service.ground(question, 8) == (question, None)


def test_course_serve_refuses_an_index_that_is_not_one(tmp_path, capsys):
    from course_utils.cli import main

    assert main(["serve", "--index", str(tmp_path), "--json"]) != 0
    assert "not an index folder" in capsys.readouterr().err


def test_the_chat_page_lists_the_passages_the_model_read_and_marks_the_cited_ones(rag_service, monkeypatch):
    """In headless Chromium, a service with an index: under the streamed answer, the passages the model was
    given, in the order it read them, the cited ones marked; the same as the API's response. The tiny model's
    answer cites nothing, so the citation is set here (the last passage): the page's marking is under test,
    ``cite`` is tested above."""
    from fastapi.testclient import TestClient

    _chromium_or_skip()
    monkeypatch.setattr("course_utils.scores.cite", lambda answer, question, passages: [passages[-1]["id"]])
    question = "Where was Warath Trernbri born?"
    body = TestClient(create_app(rag_service)).post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": question}], "max_tokens": 64, "temperature": 0}).json()
    url, stop = start_in_thread(rag_service)
    try:
        with _chat_page_answer(url, "tiny-rag", question) as page:
            answer = page.inner_text(".assistant > span")
            summary = page.inner_text(".passages summary")
            ids = page.eval_on_selector_all(".passages li .id", "els => els.map(e => e.textContent)")
            texts = page.eval_on_selector_all(".passages li", "els => els.map(e => e.textContent)")
            cited = page.eval_on_selector_all(".passages li.cited .id", "els => els.map(e => e.textContent)")
    finally:
        stop()
    assert answer == body["choices"][0]["message"]["content"]
    assert ids == [f"[{p['id']}] " for p in body["passages"]] and ids[0] == "[person-1#0] "
    assert texts == [f"[{p['id']}] {p['text']}" for p in body["passages"]]
    assert body["citations"] == [body["passages"][-1]["id"]] and cited == [f"[{body['citations'][0]}] "]
    assert summary == f"{len(body['passages'])} passage(s) read, cited: {body['citations'][0]}"
