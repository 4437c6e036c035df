"""Shared fixtures: every test gets its own empty artifact cache and clean course env vars."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

# Before torch loads: idle OpenMP threads sleep instead of spinning, which keeps a
# shared 2-core machine from thrashing (notebook 02, "Your machine's peak").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tracking_store(tmp_path_factory) -> str:
    """One MLflow store for the session's runs (a new SQLite store costs seconds of schema set-up)."""
    return f"sqlite:///{tmp_path_factory.getbasetemp() / 'mlflow' / 'mlflow.db'}"


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    """``(train_ids, val_ids, tokenizer)`` of a small generated text with a 512-id tokenizer, for loop tests."""
    from course_utils.pretrain import _text_file_data
    from tests.test_pretrain import _write_text

    return _text_file_data(_write_text(tmp_path_factory.mktemp("t") / "docs.txt"), 512)


def make_tiny_llm(texts: list[str], out, max_new_tokens: int = 6, batch_size: int = 2, context: int = 128):
    """A randomly initialised tiny Llama with a course-style tokenizer trained on ``texts``, saved in ``out``,
    as :func:`course_utils.rag_chain.load_llm`'s pipeline: tests the plumbing, not quality."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from course_utils.rag_chain import load_llm
    from course_utils.tokenizer import train_tokenizer, wrap_tokenizer

    tok = wrap_tokenizer(train_tokenizer(list(texts) * 20, 320, min_frequency=1))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=context,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return load_llm(out, max_new_tokens=max_new_tokens, batch_size=batch_size)


@contextlib.contextmanager
def fake_openai(reply):
    """A fake OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 that answers each request with
    ``reply(last user message)``. Yields ``(base_url, calls)``; ``calls`` collects ``(path, body, Authorization)``."""
    calls: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append((self.path, body, self.headers.get("Authorization")))
            data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                               "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                   "role": "assistant", "content": reply(body["messages"][-1]["content"])}}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", calls
    finally:
        server.shutdown()


@pytest.fixture(autouse=True)
def _isolated_course_env(tmp_path, monkeypatch, tracking_store):
    """Point COURSE_CACHE at a fresh folder; tests never touch the learner's cache. Experiment tracking
    stays on (course_utils.tracking), into the session's temporary store."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_FAST", "1")
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.delenv("COURSE_SEED", raising=False)
    monkeypatch.delenv("COURSE_TRACKING", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
