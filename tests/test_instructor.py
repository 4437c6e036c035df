"""The instructor pack: agendas generated from the measured times, answers from the notebooks, never stale."""

import json
import re

import pytest

from course_utils import instructor
from course_utils.cli import main
from course_utils.instructor import ONE_DAY, TWO_DAYS, AgendaConfig, agenda, agenda_markdown, exercises, sessions
from course_utils.runbook import discover_notebooks, load_times
from course_utils.settings import repo_root

NOTEBOOKS = discover_notebooks()


def test_the_pack_is_up_to_date():
    stale = instructor.stale_blocks()
    assert not stale, f"docs/instructor.md: {stale} differ from what the course generates: run " \
                      "`.venv/bin/course instructor --update` and commit docs/instructor.md"


def test_the_times_file_holds_measured_learner_times_of_course_notebooks():
    times = load_times()
    assert times, "results/times.json is empty: make course records it"
    files = {p.name for p in NOTEBOOKS}
    for number, entry in times.items():
        assert entry["file"] in files and entry["file"].startswith(number), entry
        assert 0 < entry["minutes"] < 120 and entry["measured"] and entry["machine"] and entry["source"]


def _starts(days):
    return {s.number: start for rows in days for start, _, s in rows if s is not None}


def test_agendas_are_built_from_the_times_file():
    times = load_times()
    assert times["05"]["minutes"] > 10, "the test moves notebook 05, the longest"
    plain = sessions(ONE_DAY, times)
    assert [s.number for s in plain] == [p.name[:2] for p in NOTEBOOKS]
    five = next(s for s in plain if s.number == "05")
    assert five.hands_on == 5 * -(-times["05"]["minutes"] // 5) and not five.estimated
    slower = {**times, "05": {**times["05"], "minutes": times["05"]["minutes"] + 5}}
    later = next(s for s in sessions(ONE_DAY, slower) if s.number == "05")
    assert later.hands_on == five.hands_on + 5
    before, after = _starts(agenda(ONE_DAY, times)), _starts(agenda(ONE_DAY, slower))
    moved = [n for n in before if before[n] != after[n]]
    assert moved and min(moved) > "05", f"a slower 05 moves the sessions after it and only those: {moved}"
    assert f"computes {times['05']['minutes']:g} min" in agenda_markdown(ONE_DAY, times)
    without = {k: v for k, v in times.items() if k != "07"}
    seven = next(s for s in sessions(ONE_DAY, without) if s.number == "07")
    assert seven.estimated and "course map's estimate" in agenda_markdown(ONE_DAY, without)


def test_both_agendas_fit_their_days_and_hold_every_notebook_once():
    for config in (ONE_DAY, TWO_DAYS):
        days = agenda(config)
        assert len(days) == config.days
        numbers = [s.number for rows in days for _, _, s in rows if s is not None]
        assert numbers == [p.name[:2] for p in NOTEBOOKS]
        for rows in days:
            assert rows[-1][1] == "End" and rows[-1][0] <= config.end
            labels = [label for _, label, _ in rows]
            assert labels.count("Lunch") == 1 and labels.count("Break") == len(config.breaks)
            clock = [start for start, _, _ in rows]
            assert clock == sorted(clock) and clock[0] == config.start


def test_a_day_that_overruns_is_an_error():
    times = {**load_times(), "05": {**load_times()["05"], "minutes": 400}}
    with pytest.raises(ValueError, match=f"ends at .*, after {ONE_DAY.end}"):
        agenda(ONE_DAY, times)
    assert agenda(AgendaConfig(end="23:59", exercises=0), times)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_exercise_is_found_with_its_answer(nb):
    text = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "markdown")
    if "## Exercises" not in text:
        pytest.skip(f"{nb.name} has no exercises")
    listed = re.findall(r"^\d+\. ", text.split("## Exercises", 1)[1].split("<details>", 1)[0], re.M)
    found = exercises(nb)
    assert [e.number for e in found] == list(range(1, len(listed) + 1))
    assert all(e.question and e.answer for e in found), [e.number for e in found if not e.answer]
    answers = (repo_root() / "docs" / "instructor.md").read_text().split("## Answers to the exercises", 1)[1]
    assert all(e.question.splitlines()[0] in answers for e in found)


def test_update_rewrites_only_the_generated_blocks(tmp_path):
    doc = tmp_path / "instructor.md"
    doc.write_text("# Pack\nHand-written.\n<!-- generated:agenda-one-day -->\nold\n<!-- /generated:agenda-one-day -->\n"
                   "More by hand.\n")
    assert instructor.stale_blocks(doc)[0] == "agenda-one-day"
    assert instructor.update_doc(doc) is True and instructor.update_doc(doc) is False
    text = doc.read_text()
    assert text.startswith("# Pack\nHand-written.\n") and text.endswith("More by hand.\n") and "| 09:00 |" in text
    doc.write_text("<!-- generated:nope -->\nx\n<!-- /generated:nope -->\n")
    with pytest.raises(ValueError, match="block 'nope' that nothing generates"):
        instructor.update_doc(doc)


def test_cli_json(capsys):
    assert main(["instructor", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["stale"] == [] and result["changed"] is False
    assert "| 09:00 |" in result["one_day"] and "**Day 2**" in result["two_days"]
