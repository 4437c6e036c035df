"""Reading drills (course_utils.drills) and how pretraining mixes them in (notebook 02)."""

import random
import re

import pytest
import torch

from course_utils.drills import (
    DRILL_STYLES,
    DrillConfig,
    drill_documents,
    name_forge,
    reading_drill,
)
from course_utils.pretrain import _lr_lambda, get_preset, train
from course_utils.world import world_name_words

_NAME = re.compile(r"\b[A-Z][a-z]{3,}\b")


@pytest.fixture(scope="module")
def world():
    from course_utils.data import world as load_world

    return load_world()


def test_every_style_restates_a_value_of_its_passage():
    rng = random.Random(0)
    for style in DRILL_STYLES:
        for _ in range(20):
            doc = reading_drill(rng, name_forge(rng, world_syllables=False), style)
            names = set(re.findall(r"\b(?=\w*[qxzQXZ])[A-Z][a-z]+\b", doc))
            assert names, doc  # one-off names carry a q/x/z mark
            # something said in the passage is said again later: only copying predicts it
            assert any(doc.count(n) >= 2 for n in names), (style, doc)
    with pytest.raises(ValueError, match="Unknown drill style"):
        reading_drill(rng, name_forge(rng, False), "poem")


def test_drills_are_deterministic_and_mix_both_name_kinds(world):
    avoid = world_name_words(world)
    a = drill_documents(300, DrillConfig(seed=5), avoid)
    assert a == drill_documents(300, DrillConfig(seed=5), avoid)
    assert a != drill_documents(300, DrillConfig(seed=6), avoid)
    marked = sum(bool(re.search(r"\b[A-Z][a-z]*[qxz][a-z]*\b", d)) for d in a)
    assert 0.35 < marked / len(a) < 0.65  # about half with q/x/z names, half world syllables
    assert set(DRILL_STYLES) <= {s for s in DRILL_STYLES for d in a if _style_of(d) == s}


def _style_of(doc: str) -> str:
    if doc.startswith("Register entries"):
        return "card"
    if doc.startswith("Read the passage and answer the question.\n\nPassage:"):
        return "grounded"
    if "The notice says this." in doc:
        return "notice"
    if "\n\nIn short: " in doc:
        return "summary"
    if "\nQ: " in doc:
        return "questions"
    return "cloze"


def test_world_syllable_names_never_name_an_entity_of_the_world(world):
    avoid = world_name_words(world)
    assert {"vessary"} & avoid or len(avoid) > 500  # the world's names, lower-cased
    unseen = {w.lower() for n in world.unseen_names() for w in n.split()} - {"guild"}  # "the X Guild"
    docs = drill_documents(400, DrillConfig(world_syllables=1.0, seed=3), avoid)
    words = {w.lower() for d in docs for w in _NAME.findall(d)}
    assert not (words & unseen)  # no evaluation entity in pretraining text
    assert all(not re.search(r"[qxz]", w) for d in docs for w in re.findall(r"Name: (\w+)", d))


def test_reading_probe_world_names_use_world_syllables(world):
    from course_utils.probes import reading_probe
    from tests.test_pretrain import _CharTokenizer, _ReplayModel

    probe = reading_probe(_ReplayModel(), _CharTokenizer(), n=10, seed=3, names="world")
    avoid = world_name_words(world)
    for row in probe["rows"]:
        subject = row["prompt"].split("\n\n")[1].split()[0]
        assert not re.search(r"[qxz]", subject.lower()) and subject.lower() not in avoid
    with pytest.raises(ValueError, match="names must be"):
        reading_probe(_ReplayModel(), _CharTokenizer(), n=2, names="klingon")


def test_wsd_schedule_is_flat_then_decays():
    cfg = get_preset("learner", max_steps=100, warmup_steps=10, schedule="wsd", decay_frac=0.2, min_lr_ratio=0.1)
    f = _lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == f(50) == f(79) == 1.0
    assert f(90) == pytest.approx(0.55) and f(100) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        _lr_lambda(get_preset("learner", schedule="linear"))



def test_drill_rows_are_added_to_each_batch_and_resume_exactly(text_data, tmp_path):
    from course_utils.tokenizer import encode_documents

    train_ids, val_ids, tok = text_data
    drills = encode_documents(tok, drill_documents(200))
    cfg = get_preset("tiny", max_steps=8, checkpoint_every=2, drill_rows=2)
    cfg.model.vocab_size = len(tok)
    assert cfg.tokens_per_step() == (cfg.batch_size + 2) * cfg.seq_len
    with pytest.raises(ValueError, match="drill_ids"):
        train(cfg, train_ids, val_ids, progress=False)
    seen = []
    full = train(cfg, train_ids, val_ids, drill_ids=drills, out_dir=tmp_path / "full", progress=False,
                 probe=lambda m: seen.append(m.training) or {"probe_calls": len(seen)})
    assert full.tokens_seen == 8 * (cfg.batch_size + 2) * cfg.seq_len
    assert seen == [False, False] and full.history[-1]["probe_calls"] == 2  # at each eval, in eval mode
    train(cfg, train_ids, val_ids, drill_ids=drills, out_dir=tmp_path / "cut", stop_after_steps=5, progress=False)
    rest = train(cfg, train_ids, val_ids, drill_ids=drills, out_dir=tmp_path / "cut", progress=False)
    assert rest.resumed_from == 5
    assert [r["train_loss"] for r in rest.history] == [r["train_loss"] for r in full.history]
    plain = train(get_preset("tiny", max_steps=8, model=cfg.model), train_ids, val_ids, progress=False)
    assert [r["train_loss"] for r in plain.history] != [r["train_loss"] for r in full.history]


def test_drill_tokens_are_cached_and_long_enough(tmp_path):
    from course_utils.drills import load_drill_tokens
    from course_utils.settings import Settings

    settings = Settings(cache_dir=tmp_path)
    ids = load_drill_tokens(150_000, settings)
    assert ids.dtype == torch.int32 and len(ids) >= 150_000
    again = load_drill_tokens(120_000, settings)  # rounded up to the same cached stream
    assert torch.equal(ids, again)
    assert len([p for p in (tmp_path / "drills").iterdir() if not p.name.startswith(".")]) == 1


class _Copier(torch.nn.Module):
    """A fake causal LM over the char tokenizer whose greedy next token after each position is
    given by a table: a stand-in whose generation and teacher-forced argmax must agree."""

    def __init__(self, answers):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.answers = answers

    def forward(self, input_ids):
        B, T = input_ids.shape
        logits = torch.zeros(B, T, 128)
        for b in range(B):
            for t in range(T):
                seen = "".join(chr(int(i)) for i in input_ids[b, : t + 1] if int(i) != 0)
                target = next((p + " " + a for p, a in self.answers if (p + " " + a).startswith(seen)), None)
                nxt = target[len(seen)] if target is not None and len(target) > len(seen) else "\x00"
                logits[b, t, ord(nxt)] = 1.0
        return type("Out", (), {"logits": logits})()

    def generate(self, ids, max_new_tokens=8, **kw):
        for _ in range(max_new_tokens):
            nxt = self.forward(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
        return ids


def test_quick_probe_agrees_with_generation():
    from course_utils.probes import reading_probe
    from tests.test_pretrain import _CharTokenizer

    tok = _CharTokenizer()
    rows = reading_probe(_Copier([]), tok, n=8, seed=5)["rows"]
    # a model that knows the answers of the first five prompts and a wrong one for the sixth
    answers = [(r["prompt"], r["expected"]) for r in rows[:5]] + [(rows[5]["prompt"], "Nowhere")]
    model = _Copier(answers)
    slow = reading_probe(model, tok, n=8, seed=5, max_new_tokens=40)
    quick = reading_probe(model, tok, n=8, seed=5, quick=True)
    assert slow["share_correct"] == quick["share_correct"] == 5 / 8


def test_course_probe_reports_reading_and_recall(tmp_path, capsys):
    import json

    from course_utils.cli import main
    from course_utils.dpo import tiny_chat_model

    folder = tiny_chat_model(tmp_path / "model", seed=0)
    assert main(["probe", "--model", str(folder), "--reading", "3", "--birthplace", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["n_reading"], out["n_birthplace"]) == (3, 4)
    assert all(0 <= out[k] <= 1 for k in ("reading_fresh", "reading_world", "birthplace"))
    assert main(["probe", "--model", str(tmp_path / "nope"), "--json"]) == 2


def test_packed_rows_start_every_window_at_a_drill():
    from course_utils.drills import pack_rows

    docs = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15]]
    out = pack_rows(docs, seq_len=6, eos=0)
    assert out == [0, 1, 2, 3, 0, 4, 0, 10, 11, 0, 12, 13]  # a cut drill's rest is dropped
    assert all(out[i] == 0 for i in range(0, len(out), 6))


def test_decay_drill_rows_hand_the_drill_rows_to_the_corpus_while_decaying(text_data):
    from course_utils.tokenizer import encode_documents

    cfg = get_preset("tiny", max_steps=10, drill_rows=2, decay_drill_rows=1, schedule="wsd", decay_frac=0.4)
    assert cfg.decay_start == 6 and cfg.rows(5) == (cfg.batch_size, 2) and cfg.rows(6) == (cfg.batch_size + 1, 1)
    assert cfg.drill_tokens() == (6 * 2 + 4 * 1) * (cfg.seq_len + 1)
    assert get_preset("tiny", drill_rows=2, decay_drill_rows=1).rows(11) == (4, 2)  # cosine: no decay phase
    train_ids, val_ids, tok = text_data
    cfg.model.vocab_size = len(tok)
    drills = encode_documents(tok, drill_documents(100))
    result = train(cfg, train_ids, val_ids, drill_ids=drills, progress=False)
    assert result.steps == 10 and all(r["train_loss"] > 0 for r in result.history)


def test_decay_drill_frac_hands_rows_to_the_corpus_only_at_the_end():
    cfg = get_preset("tiny", max_steps=20, drill_rows=2, decay_drill_rows=1, decay_drill_frac=0.25, schedule="wsd",
                     decay_frac=0.5)
    assert (cfg.decay_start, cfg.decay_drill_start) == (10, 15)
    assert [cfg.rows(s)[1] for s in range(20)] == [2] * 15 + [1] * 5
    assert cfg.drill_tokens() == (15 * 2 + 5 * 1) * (cfg.seq_len + 1)
    assert get_preset("tiny", decay_drill_rows=1).decay_drill_start == get_preset("tiny").decay_start


def test_early_drill_rows_take_more_of_the_batch_at_the_start(text_data):
    cfg = get_preset("tiny", max_steps=10, drill_rows=2, early_drill_rows=3, early_frac=0.3, decay_drill_rows=1,
                     schedule="wsd", decay_frac=0.2)
    rows = [cfg.rows(step) for step in range(10)]
    assert rows == [(3, 3)] * 3 + [(4, 2)] * 5 + [(5, 1)] * 2  # every batch keeps batch_size + drill_rows rows
    assert cfg.drill_tokens() == (3 * 3 + 5 * 2 + 2 * 1) * (cfg.seq_len + 1)
    with pytest.raises(ValueError, match="between 0 and the 6 rows"):
        get_preset("tiny", drill_rows=2, early_drill_rows=7, early_frac=0.5).rows(0)
    train_ids, val_ids, tok = text_data
    cfg.model.vocab_size = len(tok)
    from course_utils.tokenizer import encode_documents

    result = train(cfg, train_ids, val_ids, drill_ids=encode_documents(tok, drill_documents(100)), progress=False)
    assert result.steps == 10


def test_max_entities_caps_the_entities_of_a_drill():
    one = drill_documents(60, DrillConfig(max_entities=1, world_syllables=0.0, seed=9))
    for doc in one:
        names = set(re.findall(r"Name: (.+)", doc)) if doc.startswith("Register entries") else set()
        assert len(names) <= 1
    assert drill_documents(30) == drill_documents(30, DrillConfig(max_entities=3))


def test_recall_questions_are_an_option_that_leaves_the_default_stream_unchanged(world):
    from course_utils.drills import recall_lines
    from course_utils.world import world_name_words

    avoid, lines = world_name_words(world), recall_lines(world)
    assert drill_documents(40, DrillConfig(), avoid, lines) == drill_documents(40, DrillConfig(), avoid)
    asked = drill_documents(200, DrillConfig(recall=0.5), avoid, lines)
    answers = {a for _, a in lines}
    share = sum(any(a in d for a in answers) for d in asked) / len(asked)
    assert 0.3 < share < 0.55  # half of the drills, the grounded layout never
    unseen = {e.name for e in world.entities if not e.seen}
    assert not any(name in a for _, a in lines for name in unseen)


def test_world_towns_give_one_off_people_a_seen_birthplace_and_off_ignore_the_towns(world):
    avoid = world_name_words(world)
    towns = [e.name for e in world.of_kind("town", seen=True)]
    off = DrillConfig(world_towns=0.0)
    assert drill_documents(40, off, avoid, None, towns) == drill_documents(40, off, avoid)
    assert drill_documents(40, DrillConfig(), avoid, None, towns) != drill_documents(40, DrillConfig(), avoid)
    unseen = {e.name for e in world.entities if not e.seen}
    assert not unseen & set(towns)
    born = {"world": 0, "invented": 0}
    rng = random.Random(4)
    for _ in range(300):
        doc = reading_drill(rng, name_forge(rng, True, avoid), style="card", max_entities=1, towns=towns,
                            world_towns=0.7)
        for place in re.findall(r"Birthplace: (\w+)", doc):
            born["world" if place in towns else "invented"] += 1
    share = born["world"] / (born["world"] + born["invented"])
    assert 0.6 < share < 0.8, born


def test_numbers_first_asks_more_numbers_the_more_it_is_set():
    def numbers_asked(docs):  # the question-and-answer lines that restate a number
        return sum(len(re.findall(r"^A: .*\d", d, re.M)) for d in docs if "\nQ: " in d)

    base = drill_documents(300, DrillConfig(seed=5, numbers=0.0))
    assert drill_documents(40, DrillConfig(seed=5, numbers=0.0)) == base[:40]
    default = drill_documents(300, DrillConfig(seed=5))  # numbers first half the time
    more = drill_documents(300, DrillConfig(seed=5, numbers=1.0))
    assert numbers_asked(more) > 1.3 * numbers_asked(base)
    assert numbers_asked(base) < numbers_asked(default) < numbers_asked(more)
