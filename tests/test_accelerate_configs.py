"""The committed `accelerate launch` configurations (configs/accelerate/, notebook 03): each parses with
the installed accelerate and names only options it has; the DDP and FSDP ones launch the course's own
training loop on two CPU processes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_pretrain import REPO, _env

CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


def _launch_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


def test_the_four_routes_are_committed():
    assert {p.stem for p in CONFIGS} == {"ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_parses_and_names_options_that_exist(path: Path):
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))  # unknown top-level keys raise here
    raw = yaml.safe_load(path.read_text())
    options = _launch_options()
    for section in ("fsdp_config", "deepspeed_config"):
        for key in raw.get(section) or {}:
            assert key in options, f"{path.name}: {section}.{key} is not an option of accelerate launch"
    assert config.distributed_type in ("MULTI_GPU", "FSDP", "DEEPSPEED")
    if "zero" in path.stem:
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_accelerate_launch_runs_the_course_loop_on_two_cpu_processes(name: str, tmp_path):
    from tests.test_pretrain import _write_text

    text = _write_text(tmp_path / "docs.txt")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / f"{name}.yaml"), "--main_process_port",
           str(29540 + len(name)), "-m", "course_utils.cli", "pretrain", "--preset", "tiny", "--text-file", str(text),
           "--steps", "2", "--no-progress", "--json"]
    done = subprocess.run(cmd, env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert result["world_size"] == 2 and result["steps"] == 2 and result["fsdp"] is (name == "fsdp")
