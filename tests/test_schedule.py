"""The pretraining schedule (course_utils.schedule): warmup-stable-decay, drill rows by step, the gated decay."""

import pytest

from course_utils.pretrain import get_preset, train
from course_utils.schedule import Schedule


def _gated(**kw):
    return get_preset("tiny", max_steps=20, warmup_steps=2, schedule="wsd", decay_frac=0.25, drill_rows=2,
                      decay_drill_rows=1, gate=0.5, min_lr_ratio=0.1, **kw)


def test_a_gate_starts_the_decay_when_reading_reaches_it_and_the_run_ends_with_the_decay():
    s = Schedule(_gated())
    assert (s.decay_len, s.decay_start, s.end) == (5, 15, 20)  # closed: the planned decay
    assert not s.open_gate(4, 0.3) and not s.open_gate(6, None) and s.gate_step is None
    assert s.open_gate(8, 0.5)
    assert (s.gate_step, s.decay_start, s.end) == (8, 8, 13)
    assert not s.open_gate(10, 0.9) and s.gate_step == 8  # opens once
    assert s.lr_factor(0) == pytest.approx(0.5) and s.lr_factor(7) == 1.0 and s.lr_factor(8) == 1.0
    assert s.lr_factor(13) == pytest.approx(0.1) and s.lr_factor(10) < s.lr_factor(9) < 1.0
    assert [s.rows(k)[1] for k in range(13)] == [2] * 8 + [1] * 5
    again = Schedule(_gated())
    again.load(s.state())
    assert (again.decay_start, again.end) == (8, 13)
    again.load(None)  # a checkpoint from before gates
    assert again.end == 20


def test_a_gate_never_reached_or_reached_too_late_keeps_the_planned_decay():
    s = Schedule(_gated())
    assert not s.open_gate(16, 0.9)  # the planned decay (from 15) has begun
    assert (s.decay_start, s.end) == (15, 20)
    plain = Schedule(get_preset("tiny", max_steps=20, schedule="wsd", decay_frac=0.25))
    assert not plain.open_gate(4, 1.0) and plain.end == 20  # no gate configured
    with pytest.raises(ValueError, match="needs schedule='wsd'"):
        Schedule(get_preset("tiny", gate=0.5))



def test_a_gated_run_decays_from_its_gate_and_resumes_with_it(text_data, tmp_path):
    from course_utils.drills import drill_documents
    from course_utils.tokenizer import encode_documents

    train_ids, val_ids, tok = text_data
    drills = encode_documents(tok, drill_documents(100))
    cfg = _gated(eval_every=4, checkpoint_every=2)
    cfg.model.vocab_size = len(tok)
    with pytest.raises(ValueError, match="reading_gate"):
        train(cfg, train_ids, val_ids, drill_ids=drills, progress=False)

    def probe_opening_at(gate_step):
        calls = []

        def probe(model):
            calls.append(1)
            return {"reading_gate": 1.0 if 4 * len(calls) >= gate_step else 0.0}
        return probe

    full = train(cfg, train_ids, val_ids, drill_ids=drills, out_dir=tmp_path / "full", progress=False,
                 probe=probe_opening_at(8))
    assert full.steps == 13 and full.extra["gate_step"] == 8 and full.extra["decay_start"] == 8
    assert [r["step"] for r in full.history if "decay_start" in r] == [8]
    lrs = [r["lr"] for r in full.history]
    assert lrs[6] == pytest.approx(cfg.lr) and lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio)
    assert "val_loss" in full.history[-1]  # the end of the decay is measured
    train(cfg, train_ids, val_ids, drill_ids=drills, out_dir=tmp_path / "cut", stop_after_steps=10, progress=False,
          probe=probe_opening_at(8))
    rest = train(cfg, train_ids, val_ids, drill_ids=drills, out_dir=tmp_path / "cut", progress=False,
                 probe=lambda m: {"reading_gate": 0.0})  # the checkpoint remembers the open gate
    assert rest.resumed_from == 10 and rest.steps == 13
    assert [r["train_loss"] for r in rest.history] == [r["train_loss"] for r in full.history]
    closed = train(cfg, train_ids, val_ids, drill_ids=drills, progress=False, probe=lambda m: {"reading_gate": 0.2})
    assert closed.steps == 20 and closed.extra["gate_step"] is None
