"""The ``course`` command: each stage of the course without a notebook.

Thin on purpose: it parses arguments, calls one function of a stage module, and prints
the result. Every subcommand returns a dict; with ``--json`` that dict is printed as
one JSON line, last, on standard output (progress and logs go to standard error), so
scripts and tests can read it with ``json.loads(out.splitlines()[-1])``.

Adding a stage: write ``_add_<stage>(sub)`` that registers its parser with
``_command(sub, name, help)`` and ``set_defaults(func=...)`` and append it to ``_REGISTRARS``. Import the stage module
inside the handler, so that ``course env`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], dict[str, Any]]


def _command(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """Register subcommand ``name`` with the ``--json`` flag every subcommand has."""
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    return p


def _cmd_env(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.envcheck import check_environment, checks_as_dict, format_checks
    from course_utils.settings import get_settings

    settings = get_settings()
    checks = check_environment(settings)
    if not args.json:
        print(format_checks(checks))
    result = checks_as_dict(checks)
    result.update(
        mode=settings.mode,
        cache_dir=str(settings.cache_dir),
        data_dir=str(settings.data_dir),
        seed=settings.seed,
    )
    result["_exit"] = 0 if result["ok"] else 1
    result["_quiet"] = True  # already printed for people
    return result


def _add_env(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "env", "check the environment: [OK]/[FAIL] per package and the device")
    p.set_defaults(func=_cmd_env)


def _cmd_artifacts(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.artifacts import list_artifacts
    from course_utils.settings import get_settings

    settings = get_settings()
    records = list_artifacts(settings)
    if not args.json:
        print(f"cache: {settings.cache_dir}")
        for r in records:
            print(f"  {r.name:<18} {r.key}  built {r.built_at} in {r.build_seconds:.1f} s  {r.path}")
        if not records:
            print("  (empty: notebooks and `course` stages build what they need)")
    return {
        "cache_dir": str(settings.cache_dir),
        "artifacts": [
            {"name": r.name, "key": r.key, "path": str(r.path), "build_seconds": r.build_seconds}
            for r in records
        ],
        "_quiet": True,
    }


def _add_artifacts(sub: argparse._SubParsersAction) -> None:
    p = _command(sub, "artifacts", "list the built artifacts in the cache (COURSE_CACHE)")
    p.set_defaults(func=_cmd_artifacts)


def _cmd_notebooks(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.runbook import run_notebooks

    report = run_notebooks(
        args.notebooks or None, out_dir=args.out, fast=args.fast, timeout=args.timeout
    )
    return report


def _add_notebooks(sub: argparse._SubParsersAction) -> None:
    p = _command(
        sub,
        "notebooks",
        "execute notebooks and write executed copies with a table of wall time and peak memory",
    )
    p.add_argument("notebooks", nargs="*", help="notebook files (default: every notebooks/NN_*.ipynb)")
    p.add_argument("--out", default="build", help="output folder for executed copies and the report")
    p.add_argument("--fast", action="store_true", help="fast mode (COURSE_FAST=1) instead of learner mode")
    p.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    p.set_defaults(func=_cmd_notebooks)


_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_env,
    _add_artifacts,
    _add_notebooks,
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``course`` with every stage's subcommand."""
    parser = argparse.ArgumentParser(
        prog="course",
        description="Run each stage of the LLM course without a notebook.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _REGISTRARS:
        register(sub)
    return parser


def _print_human(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``course`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler = args.func
    try:
        result = func(args)
    except (FileNotFoundError, ValueError) as exc:
        # A learner's mistake gets a sentence, not a traceback.
        print(f"course {args.command}: error: {exc}", file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        return 2
    code = int(result.pop("_exit", 0))
    quiet = bool(result.pop("_quiet", False))
    if args.json:
        print(json.dumps(result, default=str))
    elif not quiet:
        _print_human(result)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
