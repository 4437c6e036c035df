"""The package's shape: data flows one way (no import circle among course_utils modules, counting the
imports inside functions too) and no module grows into two topics."""

from __future__ import annotations

import ast
from pathlib import Path

import course_utils

PACKAGE = Path(course_utils.__file__).parent
MAX_LINES = 660  # ~600 is the aim (CURRICULUM.md); pretrain.py, the training loop, is the longest


def imports() -> dict[str, set[str]]:
    """Each course_utils module -> the course_utils modules it imports (anywhere in its file)."""
    names = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    graph: dict[str, set[str]] = {}
    for name in names:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("course_utils"):
                mod = node.module.removeprefix("course_utils").lstrip(".")
                deps |= {mod} if mod else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("course_utils.")}
        graph[name] = (deps & names) - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    graph = imports()
    assert "rag" in graph["retrieval_eval"] and "search" in graph["rag"]  # the parser sees real imports
    assert cycles(graph) == []


def test_lower_layers_import_no_stage():
    graph = imports()
    stages = {"pretrain", "sft", "lora", "reward", "dpo", "grpo", "rag", "rag_chain", "evaluation", "cli"}
    for low in ("generation", "harness", "scores", "search", "settings", "artifacts", "model", "tokenizer"):
        assert not graph[low] & stages, (low, graph[low] & stages)


def test_no_module_is_two_topics():
    long = {p.name: n for p in PACKAGE.glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
