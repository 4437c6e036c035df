"""The ``course`` commands that run the course itself rather than one of its stages: ``env``,
``artifacts``, ``notebooks``, ``figures``, ``prebuild``, ``instructor``, ``site``, ``map`` and
``results``. Registered by :mod:`course_utils.cli` (the stages' commands and the entry point live there)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["OPERATIONS", "command"]


def command(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    """Register subcommand ``name`` with the ``--json`` flag every subcommand has."""
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    return p



def _cmd_env(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.envcheck import check_environment, checks_as_dict, format_checks
    from course_utils.settings import get_settings
    from course_utils.tracking import tracking_uri

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
        tracking=tracking_uri(settings) if settings.tracking else "off",  # where training runs are recorded
    )
    result["_exit"] = 0 if result["ok"] else 1
    result["_quiet"] = True  # already printed for people
    return result


def _add_env(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "env", "check the environment: [OK]/[FAIL] per package and the device")
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
    p = command(sub, "artifacts", "list the built artifacts in the cache (COURSE_CACHE)")
    p.set_defaults(func=_cmd_artifacts)


def _cmd_notebooks(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.runbook import run_notebooks

    from course_utils.settings import get_settings

    fast = args.fast or get_settings().fast  # COURSE_FAST=1 in the environment means fast mode too
    report = run_notebooks(args.notebooks or None, out_dir=args.out, fast=fast, timeout=args.timeout)
    return report


def _add_notebooks(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub,
        "notebooks",
        "execute notebooks and write executed copies with a table of wall time and peak memory",
    )
    p.add_argument("notebooks", nargs="*", help="notebook files (default: every notebooks/NN_*.ipynb)")
    p.add_argument("--out", default="build", help="output folder for executed copies and the report")
    p.add_argument("--fast", action="store_true", help="fast mode instead of learner mode (also when COURSE_FAST=1 is set)")
    p.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    p.set_defaults(func=_cmd_notebooks)


def _cmd_prebuild(args: argparse.Namespace) -> dict[str, Any]:
    import os

    if args.fast:
        os.environ["COURSE_FAST"] = "1"  # before any stage reads its settings
    from course_utils.prebuild import format_table, prebuild, rows_as_dicts
    from course_utils.settings import get_settings

    settings = get_settings()
    rows = prebuild(args.artifacts or None, settings)
    if not args.json:
        print(f"{settings.mode} mode, cache {settings.cache_dir}\n{format_table(rows)}")
    built = [r.artifact for r in rows if r.status == "built"]
    if args.expect_cached and built:
        print(f"course prebuild: {', '.join(built)} had to be built: the cache was not complete",
              file=sys.stderr if args.json else sys.stdout)
    return {"mode": settings.mode, "cache_dir": str(settings.cache_dir), "artifacts": rows_as_dicts(rows),
            "built": len(built), "_quiet": True, "_exit": 1 if args.expect_cached and built else 0}


def _add_prebuild(sub: argparse._SubParsersAction) -> None:
    from course_utils.prebuild import PLAN

    p = command(sub, "prebuild", "build every artifact the notebooks need (before a class): a line per artifact, "
                                  "then a table of what is cached")
    p.add_argument("artifacts", nargs="*", metavar="ARTIFACT",
                   help=f"only these (default: all, in order): {', '.join(s.name for s in PLAN)}")
    p.add_argument("--fast", action="store_true", help="fast-mode artifacts (also when COURSE_FAST=1 is set)")
    p.add_argument("--expect-cached", action="store_true", help="exit with status 1 if any artifact had to be built "
                                                                "(checks that a copied cache is complete)")
    p.set_defaults(func=_cmd_prebuild)


def _cmd_instructor(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.instructor import ONE_DAY, TWO_DAYS, agenda_markdown, stale_blocks, update_doc

    changed = update_doc() if args.update else False
    stale = stale_blocks()
    if not args.json:
        print(f"## One day\n\n{agenda_markdown(ONE_DAY)}\n\n## Two days\n\n{agenda_markdown(TWO_DAYS)}\n")
        print("docs/instructor.md " + ("updated" if changed else "is up to date" if not stale else
                                       f"is stale ({', '.join(stale)}): run `course instructor --update`"))
    return {"changed": changed, "stale": stale, "one_day": agenda_markdown(ONE_DAY),
            "two_days": agenda_markdown(TWO_DAYS), "_quiet": True}


def _add_instructor(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "instructor", "the workshop agendas from the measured learner-mode times; --update rewrites "
                                    "the generated parts of docs/instructor.md")
    p.add_argument("--update", action="store_true", help="rewrite docs/instructor.md's generated blocks (agendas, "
                                                         "pre-build list, room, answers)")
    p.set_defaults(func=_cmd_instructor)


def _cmd_site(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.site import build_site

    result = build_site(args.executed, args.out, slides=args.slides)
    if not args.json:
        done = "built" if result["ok"] else "FAILED"
        print(f"site {done} in {result['seconds']:.0f} s from {result['mode']}-mode notebooks: {result['index']}")
        for page in result["missing"]:
            print(f"  missing: {page}")
        result["_quiet"] = True
    return result


def _add_site(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "site", "build the course site (Sphinx + MyST-NB) from executed notebooks, without running "
                              "them: course map, notebook pages, decks, instructor pack, search")
    p.add_argument("--executed", default=None, help="folder of executed notebooks (default build/notebooks, "
                                                    "what make course writes)")
    p.add_argument("--out", default=None, help="output folder (default build/site)")
    p.add_argument("--slides", default=None, help="folder of built decks to link (default build/slides)")
    p.set_defaults(func=_cmd_site)


def _cmd_figures(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from course_utils.runbook import export_figures

    paths = [Path(p) for p in args.notebooks]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"No such executed notebook: {', '.join(missing)}.")
    return {"figures": [str(p) for p in export_figures(paths, Path(args.out))]}


def _add_figures(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "figures", "export the tagged plots (cell tag figure:NAME) of executed notebooks as the "
                                 "decks' pictures")
    p.add_argument("notebooks", nargs="+", help="executed notebooks (e.g. build/notebooks/04_sft.ipynb)")
    p.add_argument("--out", default="slides/img", help="folder for NN_NAME.png (default slides/img)")
    p.set_defaults(func=_cmd_figures)


def _cmd_map(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.coursemap import COURSE_MAP, course_map_markdown, update_readme
    from course_utils.runbook import load_times

    times = load_times()

    changed = update_readme() if args.update_readme else False
    if not args.json:
        print(course_map_markdown())
        if args.update_readme:
            print("README.md updated" if changed else "README.md already up to date")
    return {
        "notebooks": [
            {"number": m.number, "file": m.filename, "available": m.available, "cpu_minutes_estimate": m.cpu_minutes,
             "cpu_minutes_measured": times[m.number]["minutes"] if m.number in times else None}
            for m in COURSE_MAP
        ],
        "readme_changed": changed,
        "_quiet": True,
    }


def _add_map(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "map", "print the course map (which notebooks exist, their times)")
    p.add_argument("--update-readme", action="store_true", help="rewrite the map in README.md")
    p.set_defaults(func=_cmd_map)


def _cmd_results(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.results import load_results, stale_markers, update_files
    from course_utils.settings import repo_root

    results = load_results(args.dir)
    files = [repo_root() / "README.md", *sorted((repo_root() / "slides").glob("*.md"))]
    changed = update_files(files, results) if args.update else []
    stale = {str(f.relative_to(repo_root())): stale_markers(f.read_text(), results) for f in files}
    stale = {k: v for k, v in stale.items() if v}
    if not args.json:
        for key, fig in results.items():
            lines = fig["text"].strip().splitlines()
            shown = f"(a table of {len(lines) - 2} rows)" if len(lines) > 1 else fig["text"]
            print(f"{key:32s} {shown:>20s}   ({fig['mode']}, {fig['measured']})")
        for f in changed:
            print(f"updated {f.relative_to(repo_root())}")
        for name, rows in stale.items():
            for key, quoted, recorded in rows:
                print(f"{name}: {key} quotes {quoted!r}, recorded {recorded!r}")
    return {"figures": {k: v["value"] for k, v in results.items()}, "changed": [str(f) for f in changed],
            "stale": stale, "_quiet": True}


def _add_results(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "results", "the notebooks' recorded figures; --update rewrites the README's and decks' quotes")
    p.add_argument("--update", action="store_true", help="rewrite every <!--r:NN.name--> marker in README.md and slides/")
    p.add_argument("--dir", default=None, help="the results folder (default: results/ in the repository)")
    p.set_defaults(func=_cmd_results)


#: The registrars of these commands, in the order ``course --help`` lists them.
OPERATIONS = [_add_env, _add_artifacts, _add_notebooks, _add_figures, _add_prebuild, _add_instructor, _add_site,
              _add_map, _add_results]
