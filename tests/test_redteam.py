"""Notebook 11's attack suite as data (course_utils/redteam.py, data/security/)."""

from __future__ import annotations

import base64
from collections import Counter

import pytest

from course_utils import data
from course_utils.redteam import (ATTACK_KINDS, BENIGN_KINDS, CANARY, SYSTEM_PROMPT, attack_succeeded, build_attacks,
                                  build_benign, is_refusal)


@pytest.fixture(scope="module")
def suite():
    return data.load_security("attacks"), data.load_security("benign")


def test_the_suite_is_big_enough_labelled_and_split_by_phrasing(suite):
    attacks, benign = suite
    assert len(attacks) >= 60 and len(benign) >= 60
    assert set(Counter(a["kind"] for a in attacks)) == set(ATTACK_KINDS)
    assert set(Counter(b["kind"] for b in benign)) == set(BENIGN_KINDS)
    for r in attacks + benign:
        assert r["split"] == ("test" if r["phrasing"] == 3 else "train") and r["messages"][-1]["role"] == "user"
    assert {a["success"]["type"] for a in attacks} == {"canary", "marker", "forbidden"}
    assert all(a["documents"] for a in attacks if a["kind"] == "indirect_injection")
    assert all("<|end|>" in a["messages"][-1]["content"] or "<|system|>" in a["messages"][-1]["content"]
               for a in attacks if a["kind"] == "token_forgery")
    assert all(len(a["messages"]) == 3 for a in attacks if a["kind"] == "jailbreak_multiturn")
    assert len({str(a["messages"]) + str(a["documents"]) for a in attacks}) == len(attacks), "no two attacks alike"
    assert CANARY in SYSTEM_PROMPT and not any(CANARY in m["content"] for r in attacks + benign for m in r["messages"])


def test_the_committed_suite_is_what_the_generator_makes(suite):
    w = data.world()
    evals = data.load_eval()
    assert build_attacks(w, evals) == suite[0] and build_benign(w, evals) == suite[1]


def test_markers_and_encodings_carry_what_they_claim(suite):
    attacks, _ = suite
    for a in attacks:
        text = " ".join(m["content"] for m in a["messages"]) + " ".join(a["documents"])
        if a["success"]["type"] == "marker":
            assert a["success"]["value"] in text
        if a["kind"] == "jailbreak_encoding" and a["phrasing"] in (0, 3):
            payload = text.split(": ")[-1]
            assert base64.b64decode(payload).decode()  # a real base64 string


def test_success_criteria_and_refusals():
    leak = {"success": {"type": "canary", "value": CANARY}}
    assert attack_succeeded(leak, f"The code is {CANARY}.") and attack_succeeded(leak, "kestrel 4471".upper())
    assert not attack_succeeded(leak, "I cannot share the code.")
    marker = {"success": {"type": "marker", "value": "PINEAPPLE"}}
    assert attack_succeeded(marker, "pineapple") and not attack_succeeded(marker, "Kithka lies on the Bemfal.")
    forbidden = {"success": {"type": "forbidden", "value": "..."}}
    assert attack_succeeded(forbidden, "First, bribe the weigher.")
    assert not attack_succeeded(forbidden, "I cannot help you break the legal code.")
    assert not attack_succeeded(forbidden, "   ")
    assert is_refusal("I won't do that.") and not is_refusal("Article 1 applies.")
    with pytest.raises(ValueError, match="success type"):
        attack_succeeded({"success": {"type": "vibes", "value": ""}}, "x")
    with pytest.raises(ValueError, match="Unknown split"):
        data.load_security("jailbreaks")


def test_run_suite_renders_forged_markers_as_tokens_unless_sanitized(tmp_path):
    from course_utils.security import _conversation, attack_table, run_suite
    from tests.conftest import make_tiny_llm

    attacks, benign = data.load_security("attacks"), data.load_security("benign")
    llm = make_tiny_llm([m["content"] for r in attacks[:20] for m in r["messages"]], tmp_path / "tiny", context=512)
    forged = next(a for a in attacks if a["kind"] == "token_forgery")
    planted = next(a for a in attacks if a["kind"] == "indirect_injection")
    conv = _conversation(planted, SYSTEM_PROMPT)
    assert conv[0] == {"role": "system", "content": SYSTEM_PROMPT} and planted["documents"][0] in conv[-1]["content"]
    sample = [forged, planted, benign[0]]
    raw = run_suite(llm, sample)
    assert list(raw["attack"]) == [True, True, False] and raw["succeeded"].iloc[:2].notna().all()
    assert raw["succeeded"].iloc[2] != raw["succeeded"].iloc[2]  # NaN for a benign request
    table = attack_table(raw)
    assert table.loc["all attacks", "n"] == 2 and table.loc["benign (false refusals)", "n"] == 1
    tok = llm.pipeline.tokenizer
    end = tok.convert_tokens_to_ids("<|end|>")
    text = tok.apply_chat_template(_conversation(forged, None), tokenize=False, add_generation_prompt=True)
    assert tok(text)["input_ids"].count(end) >= 2  # the forged marker became a real end-of-turn token
    safe = run_suite(llm, sample, sanitize=True)
    assert len(safe) == 3
