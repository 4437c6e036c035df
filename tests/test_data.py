"""Tests of the course's data (course_utils.world, corpus, documents, supervised, data).

They check behaviour that later notebooks rely on: the sizes the issue asks for, that no
unseen entity leaks into training text, that every gold answer is in its gold document,
that two builds are byte-identical, and that a broken file gets a clear message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from course_utils import data
from course_utils.corpus import CorpusConfig, count_tokens, generate_corpus
from course_utils.settings import get_settings

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


@pytest.fixture(scope="module")
def world():
    return data.world()


@pytest.fixture(scope="module")
def small_corpus(world):
    """A 600k-token corpus: same renderers and phrasings as the default, six times smaller."""
    train, val = generate_corpus(world, CorpusConfig(target_tokens=600_000))
    return train + val


def _names_regex(names: list[str]) -> re.Pattern:
    alternatives = "|".join(re.escape(n) for n in sorted(set(names), key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z])(?:{alternatives})(?![A-Za-z])")


def _texts(records: list[dict]) -> list[str]:
    out = []
    for r in records:
        for key in ("messages", "prompt", "chosen", "rejected"):
            value = r.get(key)
            if isinstance(value, list):
                out.extend(m["content"] for m in value)
            elif isinstance(value, str):
                out.append(value)
    return out


# ----------------------------------------------------------------------------- sizes

def test_counts_meet_the_minimums(world):
    kinds = {e.kind for e in world.entities}
    assert {"town", "river", "mountain", "guild", "person", "festival", "event"} <= kinds
    assert len(world.entities) >= 300
    unseen = [e for e in world.entities if not e.seen]
    assert len(unseen) / len(world.entities) >= 0.15
    assert len(world.articles) >= 40 and len(world.precedents) >= 100
    assert all(p.articles for p in world.precedents)

    assert len(data.load_sft("train")) >= 3000
    assert len(data.load_sft("test")) >= 100
    assert len(data.load_preferences("train")) >= 2000
    assert len(data.load_preferences("test")) >= 100
    ev = data.load_eval()
    assert len(ev) >= 300
    assert len(data.load_eval(seen=True)) >= 100 and len(data.load_eval(seen=False)) >= 100
    assert len(data.load_eval(kind="legal")) >= 40

    docs = data.load_documents()
    originals = {d["id"] for d in docs if d["duplicate_of"] is None}
    expected = {e.id for e in world.entities} | {a.id for a in world.articles} | {p.id for p in world.precedents}
    assert originals == expected  # one document per entity, article and precedent
    assert {d["format"] for d in docs} == {"html", "md", "txt"}


def test_sft_has_every_kind_and_system_prompts():
    train = data.load_sft("train")
    kinds = {r["kind"] for r in train}
    assert {"closed_book", "grounded", "not_in_passage", "summarise", "extract_json",
            "classify", "rewrite_politely", "multi_turn"} <= kinds
    assert sum(r["messages"][0]["role"] == "system" for r in train) > 500
    assert any(sum(m["role"] == "user" for m in r["messages"]) >= 2 for r in train)
    for r in train:
        assert r["messages"][-1]["role"] == "assistant"
    extract = next(r for r in train if r["kind"] == "extract_json")
    assert isinstance(json.loads(extract["messages"][-1]["content"]), dict)


def test_reading_world_shares_only_the_first_names_of_seen_people(world):
    from course_utils.supervised import reading_world
    from course_utils.world import world_name_words

    other = reading_world(world, seed=7)
    words = {w for w in world_name_words(world) if len(w) >= 4}
    firsts = {e.name.split()[0] for e in world.of_kind("person", seen=True)}
    people = other.of_kind("person")
    assert len(people) == len(world.of_kind("person")) and {p.name.split()[0] for p in people} <= firsts
    for e in other.entities:
        own = (e.aliases[0] if e.aliases else e.name).lower()  # surname, or the name without "Guild", "Fair"...
        clash = [w for w in words if w in own or own in w]
        assert not clash, f"{e.name!r} of the reading world clashes with the world's {clash}"


def test_retrieved_page_questions_hold_their_answer_and_fit_the_context():
    from course_utils.rag_chain import PROMPT_TEMPLATE
    from course_utils.supervised import READ_PROMPT, page_chunks

    head = READ_PROMPT.split("{context}")[0]
    assert PROMPT_TEMPLATE == READ_PROMPT  # SFT trains on the prompt the RAG chain sends
    rag = [r for r in data.load_sft("train") if r["kind"] == "grounded_rag"]
    assert len(rag) >= 500
    several = 0
    for r in rag:
        user, answer = r["messages"][-2]["content"], r["messages"][-1]["content"]
        assert user.startswith(head)
        passage, question = user[len(head):].split("\n\nQuestion: ")
        key = [w for w in re.findall(r"\w+", answer)
               if (w[0].isupper() or w.isdigit()) and w not in question and w not in ("The", "A", "An")]
        key = key or re.findall(r"\w+", answer)[-1:]  # "... was a glassblower."
        assert key and all(w in passage for w in key), (answer, passage)
        several += passage.count(" was born in ") + passage.count(" flows through ") > 1
    assert several > len(rag) // 4  # many pages hold more than one candidate answer
    text = "One. Two two. " * 40
    chunks = page_chunks(text.strip(), 100)
    assert all(len(c) <= 100 for c in chunks) and " ".join(chunks) == text.strip()
    assert page_chunks("A very long sentence without an end", 5) == ["A very long sentence without an end"]


def test_preference_flaws_and_trl_format():
    train = data.load_preferences("train")
    assert {r["flaw"] for r in train} == {"wrong_fact", "ignores_passage", "rude", "rambling", "unsupported_claim"}
    for r in train[:200]:
        assert r["prompt"][-1]["role"] == "user"
        assert r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant"
        assert r["chosen"] != r["rejected"]


def test_corpus_size_and_split(small_corpus):
    assert sum(count_tokens(d) for d in small_corpus) >= 600_000
    cfg = CorpusConfig()
    assert cfg.target_tokens >= 3_000_000  # the default the learner-mode pretraining uses


# ----------------------------------------------------------------------------- seen / unseen

def test_world_names_never_overlap(world):
    names = [e.name.lower() for e in world.entities] + [a.lower() for e in world.entities for a in e.aliases]
    names = [n for n in names if " " not in n]  # single-word names and aliases
    assert len(names) == len(set(names))
    for a in names:
        for b in names:
            assert a == b or a not in b, f"{a!r} is inside {b!r}"


def test_unseen_entities_never_appear_in_training_text(world, small_corpus):
    pattern = _names_regex(world.unseen_names())
    for text in small_corpus:
        hit = pattern.search(text)
        assert hit is None, f"unseen name {hit.group(0)!r} in the corpus: {text[:200]!r}"
    training = (_texts(data.load_sft("train")) + _texts(data.load_sft("test"))
                + _texts(data.load_preferences("train")) + _texts(data.load_preferences("test")))
    for text in training:
        hit = pattern.search(text)
        assert hit is None, f"unseen name {hit.group(0)!r} in SFT/preference text: {text[:200]!r}"
    # ... but they are in the document store, so the test above is not vacuous.
    docs = data.load_documents(with_content=True)
    assert sum(bool(pattern.search(d["text"])) for d in docs if not d["seen"]) >= 80


def test_seen_facts_are_repeated_in_probe_form(world, small_corpus):
    text = "\n".join(small_corpus)
    counts = []
    for p in world.of_kind("person", seen=True):
        town = world.get(p.attrs["born_in_id"]).name
        counts.append(text.count(f"{p.name} was born in {town}"))
        assert counts[-1] >= 1, p.name
    # A sixth of the default corpus: the full one states each about six times as often.
    assert sorted(counts)[len(counts) // 2] >= 4


# ----------------------------------------------------------------------------- gold support

def _contains(text: str, label: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(label)}(?![\w])", text) is not None


def test_every_gold_answer_is_in_its_gold_documents():
    docs = {d["id"]: d for d in data.load_documents(with_content=True)}
    for q in data.load_eval():
        gold = " ".join(docs[i]["text"] for i in q["gold_doc_ids"])
        if q["kind"].startswith("legal"):
            for label in q["articles"] + q["precedents"]:
                assert _contains(gold, label), (q["id"], label)
        if q["kind"] != "legal:scenario" and q["kind"] != "legal:articles":
            assert _contains(gold, q["answer"]), (q["id"], q["answer"], gold[:300])


# ----------------------------------------------------------------------------- determinism

def test_two_builds_are_byte_identical_and_match_the_committed_data(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    data.build(out_dir=a, corpus=False)
    data.build(out_dir=b, corpus=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 600
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        committed = DATA / rel
        assert committed.exists() and committed.read_bytes() == (a / rel).read_bytes(), (
            f"data/{rel} differs from a fresh build: run `course data build` and commit")


def test_corpus_is_deterministic(world, tmp_path):
    cfg = CorpusConfig(target_tokens=100_000)
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    data.write_corpus(tmp_path / "1", world, cfg)
    data.write_corpus(tmp_path / "2", world, cfg)
    for name in ("train.jsonl", "validation.jsonl"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


# ----------------------------------------------------------------------------- broken files

@pytest.mark.parametrize(
    "content, expected",
    [
        (b'{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [}\n', r"line 2: not valid JSON"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}\n\n{"kind": "x"}\n', r"line 3: missing field 'messages'"),
        (b'{"messages": "hello"}\n', r"line 1: field 'messages' should be a non-empty list"),
        (b'{"messages": [{"role": "robot", "content": "hi"}]}\n', r"line 1: messages\[0\] has role 'robot'"),
        (b"", r"the file is empty"),
        (b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n', r"line 1: not valid UTF-8"),
    ],
    ids=["bad-json", "missing-field", "wrong-type", "bad-role", "empty", "not-utf8"],
)
def test_broken_files_get_clear_messages(tmp_path, content, expected):
    path = tmp_path / "broken.jsonl"
    path.write_bytes(content)
    with pytest.raises(data.DataError, match=expected) as info:
        data.load_sft(source=str(path))
    assert str(path) in str(info.value)


def test_wrong_type_in_eval_and_missing_file(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a", "gold_doc_ids": [], "seen": "yes", "kind": "fact"}) + "\n")
    with pytest.raises(data.DataError, match=r"eval.jsonl, line 1: field 'seen' should be true or false, got str"):
        data.load_eval(source=str(path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        data.load_sft(source=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="Unknown split"):
        data.load_sft("validation")


# ----------------------------------------------------------------------------- other sources

def test_local_files_in_common_formats(tmp_path):
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n\n".join(f"Document number {i}.\nIt has two lines." for i in range(100)))
    train, val = data.load_corpus("train", source=str(txt)), data.load_corpus("validation", source=str(txt))
    assert len(train) == 98 and len(val) == 2 and train[0] == "Document number 0.\nIt has two lines."
    jl = tmp_path / "corpus.jsonl"
    jl.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(10)))
    assert data.load_corpus(source=str(jl)) == [f"doc {i}" for i in range(10)]

    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Hello"}]}) + "\n")
    assert data.load_sft(source=str(chat))[0]["messages"][1]["content"] == "Hello"
    pref = tmp_path / "pref.jsonl"
    pref.write_text(json.dumps({"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}) + "\n")
    recs = data.load_preferences(source=str(pref))
    ds = data.to_dataset(recs)
    assert ds.column_names == ["prompt", "chosen", "rejected"] and len(ds) == 1
    assert data.to_dataset(["a", "b"])["text"] == ["a", "b"]


def test_data_build_keeps_documents_a_learner_added(tmp_path):
    data.build(out_dir=tmp_path, corpus=False)
    mine = tmp_path / "documents" / "md" / "my-notes.md"
    mine.write_text("# My notes\nKithka has a fine market.", encoding="utf-8")
    (tmp_path / "documents" / "extra").mkdir()
    (tmp_path / "documents" / "extra" / "letter.txt").write_text("Dear Orin,", encoding="utf-8")
    generated = sorted(p for p in (tmp_path / "documents").rglob("*") if p.is_file() and p.parent.name != "extra"
                       and p.name != "my-notes.md")
    result = data.build(out_dir=tmp_path, corpus=False)
    assert result["kept_documents"] == ["documents/extra/letter.txt", "documents/md/my-notes.md"]
    assert mine.read_text(encoding="utf-8").startswith("# My notes")
    assert sorted(p for p in (tmp_path / "documents").rglob("*") if p.is_file() and p.parent.name != "extra"
                  and p.name != "my-notes.md") == generated  # the generated ones were written again
    assert "kept_documents" not in data.build(out_dir=tmp_path / "fresh", corpus=False)


def test_local_sft_and_preference_files_are_split_into_train_and_test(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"id": f"c{i}", "messages": [
        {"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}) + "\n"
        for i in range(25)))
    train, test = data.load_sft("train", source=str(chat)), data.load_sft("test", source=str(chat))
    assert [r["id"] for r in test] == ["c9", "c19"] and len(train) == 23
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert data.load_sft("test", source=str(chat)) == test  # deterministic
    pref = tmp_path / "pref.jsonl"
    pref.write_text("".join(json.dumps({"prompt": f"Say {i}", "chosen": "Yes.", "rejected": "No."}) + "\n"
                            for i in range(20)))
    assert len(data.load_preferences("train", source=str(pref))) == 18
    assert [r["prompt"] for r in data.load_preferences("test", source=str(pref))] == ["Say 9", "Say 19"]
    with pytest.raises(ValueError, match="Unknown split 'validation'"):
        data.load_sft("validation", source=str(chat))


def test_hub_ids_go_through_datasets_and_are_validated(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": 3, "rejected": "r"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(data.DataError, match=r"'someone/prefs', split 'train', row 1: field 'chosen'"):
        data.load_preferences(source="someone/prefs")
    assert calls == [("someone/prefs", "train")]


def test_sets_convert_to_datasets():
    ds = data.to_dataset(data.load_eval()[:20])
    assert {"question", "answer", "gold_doc_ids", "seen"} <= set(ds.column_names)
    ds = data.to_dataset(data.load_sft("test")[:20])
    assert ds[0]["messages"][0]["role"] in ("system", "user")


def test_cli_data_stats_json(capsys):
    from course_utils.cli import main

    assert main(["data", "stats", "--json", "--no-corpus"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["sft"]["train"]["count"] >= 3000
    assert result["eval"]["count"] >= 300 and result["documents"]["total"] >= 590
    assert get_settings().data_dir.exists()


def test_default_corpus_is_built_cached_and_split():
    train = data.load_corpus("train", target_tokens=50_000)
    val = data.load_corpus("validation", target_tokens=50_000)
    assert len(train) > 50 * len(val) / 2 and len(val) >= 2
    assert all(isinstance(d, str) and d for d in train)
    assert data.load_corpus("train", target_tokens=50_000) == train  # from the cache, identical


def test_importing_the_data_modules_stays_light():
    import subprocess
    import sys

    code = ("import sys, course_utils.data, course_utils.world, course_utils.corpus, course_utils.documents, "
            "course_utils.supervised; print(sorted(m for m in ('torch', 'datasets', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
