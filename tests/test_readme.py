"""The README stays honest: its course map is the package's, its commands exist."""

import re

from course_utils.coursemap import course_map_markdown
from course_utils.settings import REPO_SLUG, repo_root

ROOT = repo_root()
README = (ROOT / "README.md").read_text()


def test_course_map_matches_the_package():
    block = README.split("<!-- course-map:start -->\n", 1)[1].split("\n<!-- course-map:end -->", 1)[0]
    assert block == course_map_markdown(), (
        "README course map is stale: run `course map --update-readme`"
    )


def test_every_make_target_in_the_readme_exists():
    targets = set(re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M))
    for target in set(re.findall(r"(?:`|^)make ([a-z][a-z-]*)", README, re.M)):
        assert target in targets, f"README mentions `make {target}`, which the Makefile lacks"


def test_every_course_subcommand_in_the_readme_exists():
    from course_utils.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in set(re.findall(r"(?:`|^|bin/)course ([a-z][a-z-]*)", README, re.M)):
        assert name in sub.choices, f"README mentions `course {name}`, which does not exist"


def test_badges_point_at_the_repository():
    assert f"colab.research.google.com/github/{REPO_SLUG}/" in README
    assert f"mybinder.org/v2/gh/{REPO_SLUG}/" in README


def test_the_map_shows_measured_cpu_times_and_marks_estimates():
    table = course_map_markdown(times={"02": {"minutes": 5.84, "measured": "2026-12-02"}}).splitlines()
    row = {line.split(" | ")[0].strip("| "): line for line in table[2:]}
    assert "| 5.8 min | ~4 min |" in row["02"]  # measured CPU time; the GPU time is an estimate
    assert "| ~13 min |" in row["04"]  # not measured: the estimate, marked
