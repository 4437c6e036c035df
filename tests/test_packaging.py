"""The pins: pyproject, the lock, environment.yml and the env check agree with each other."""

import re

from course_utils.envcheck import REQUIRED, Check, format_checks, pinned_versions
from course_utils.settings import repo_root

ROOT = repo_root()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_every_direct_pin_is_in_the_lock_at_the_same_version():
    lock = _lock()
    pins = pinned_versions()
    assert len(pins) > 25
    for name, version in pins.items():
        assert lock.get(name) == version, f"{name}: pyproject {version}, lock {lock.get(name)}"


def test_the_lock_pins_everything_exactly_and_leaves_torch_to_the_makefile():
    lock = _lock()
    assert "torch" not in lock and "course-utils" not in lock
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in lock.values())
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_VERSION ?= 2.13.0" in makefile


def test_every_checked_package_is_pinned_or_is_torch():
    pins = pinned_versions()
    for dist in REQUIRED:
        assert dist == "torch" or dist in pins, dist


def test_environment_yml_installs_the_lock_and_the_package():
    text = (ROOT / "environment.yml").read_text()
    assert "python=3.11" in text
    assert "-r requirements-lock.txt" in text and "-e ." in text
    assert "torch==2.13.0" in text


def test_check_lines_read_well():
    ok = Check("peft", True, "0.21.2", "0.21.2")
    bad = Check("faiss-cpu", False, "", "1.15.1", "missing: run `make lab`")
    assert ok.line().startswith("[OK]") and "course pins" not in ok.line()
    assert bad.line().startswith("[FAIL]") and "not installed" in bad.line() and "make lab" in bad.line()
    assert format_checks([ok, bad]).splitlines()[-1] == "1 OK, 1 FAIL"
