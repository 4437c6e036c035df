"""The screenshots under docs/figures/, taken in headless Chromium with playwright (the lab extra).

- ``mlflow_lora_sweep.png``: MLflow's run comparison of notebook 05's LoRA rank sweep (the latest learner-mode
  run of each rank in the ``llm-course/lora`` experiment of the course's store), from ``mlflow ui`` started
  from its own environment (README, "Experiment tracking");
- ``../site_home.png`` (docs/site_home.png, in the README): the course site's home page (``make site``,
  build/site/index.html);
- ``slides/img/13_chat_page.png`` (notebook 13 and its deck): the chat page of ``course serve`` with the course's
  learner-mode SFT model answering with retrieval from the course's index (``course serve --index course``),
  after the first two fact questions of the evaluation set, the first answer rated (``--chat``; the rating
  goes to a temporary store, not the course's).

    .venv-mlflow/bin/mlflow ui --backend-store-uri sqlite:///artifacts/mlflow/mlflow.db --port 5055 &
    .venv/bin/python docs/screenshots.py --mlflow http://127.0.0.1:5055
    .venv/bin/python docs/screenshots.py --chat
"""

from __future__ import annotations

import argparse
import json
import shutil
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "figures"


def sweep_runs(store: str, experiment: str = "llm-course/lora", prefix: str = "lora-r") -> tuple[str, list[str]]:
    """The experiment's id and the latest run of each rank that ran longer than a minute (learner mode)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"No experiment {experiment!r} in {store}: run notebook 05 in learner mode first.")
    latest: dict[str, str] = {}
    for r in client.search_runs([exp.experiment_id], max_results=200, order_by=["attributes.start_time DESC"]):
        name = r.data.tags.get("mlflow.runName", "")
        long = (r.info.end_time or 0) - r.info.start_time > 60_000
        if name.startswith(prefix) and "loss" in r.data.metrics and long and name not in latest:
            latest[name] = r.info.run_id
    if len(latest) < 2:
        raise SystemExit(f"Fewer than two learner-mode runs named {prefix}* in {experiment!r}.")
    return exp.experiment_id, [latest[k] for k in sorted(latest, key=lambda n: int(n[len(prefix):]))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mlflow", default=None, help="URL of a running mlflow ui (skip the MLflow shot without it)")
    ap.add_argument("--store", default=f"sqlite:///{ROOT / 'artifacts' / 'mlflow' / 'mlflow.db'}")
    ap.add_argument("--site", default=str(ROOT / "build" / "site" / "index.html"))
    ap.add_argument("--chat", action="store_true", help="the chat page of course serve with the learner SFT model")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if chrome is None:
        raise SystemExit("No Chromium: `make chromium` installs it.")
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chrome, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        if args.mlflow:
            exp, runs = sweep_runs(args.store)
            q = urllib.parse.quote
            page.goto(f"{args.mlflow}/#/compare-runs?runs={q(json.dumps(runs))}&experiments={q(json.dumps([exp]))}")
            page.wait_for_selector("text=Comparing", timeout=60_000)
            page.wait_for_timeout(4000)  # the plots draw after the page
            close = page.locator('button[aria-label="Close"]')  # the assistant panel, when it opens
            if close.count():
                close.last.click()
                page.wait_for_timeout(1000)
            page.screenshot(path=str(OUT / "mlflow_lora_sweep.png"))
            print(f"{OUT / 'mlflow_lora_sweep.png'}: {len(runs)} runs")
        if Path(args.site).exists():
            page.goto(Path(args.site).resolve().as_uri())
            page.wait_for_timeout(1500)
            page.screenshot(path=str(OUT.parent / "site_home.png"))
            print(f"{OUT.parent / 'site_home.png'}")
        if args.chat:
            chat_page(page, ROOT / "slides" / "img" / "13_chat_page.png")
        browser.close()
    return 0


def chat_page(page, out: Path, n_questions: int = 2) -> None:
    """Serve the course SFT model, ask ``n_questions`` seen-fact questions on its chat page, rate the first
    answer, and take the screenshot."""
    import tempfile

    from course_utils.data import load_eval
    from course_utils.rag import load_or_build_index
    from course_utils.serve import ChatService, start_in_thread
    from course_utils.settings import get_settings
    from course_utils.sft import load_or_build_sft_model

    settings = get_settings()
    questions = [q["question"] for q in load_eval(seen=True, settings=settings) if q["kind"].startswith("fact")]
    with tempfile.TemporaryDirectory() as tmp:
        service = ChatService(load_or_build_sft_model(settings), name="course-sft", feedback=Path(tmp) / "ratings.db",
                              index=load_or_build_index(settings=settings))
        url, stop = start_in_thread(service)
        try:
            page.set_viewport_size({"width": 1100, "height": 820})
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model').textContent === 'course-sft'")
            for i, question in enumerate(questions[:n_questions]):
                page.fill("#question", question)
                page.click("#send")
                page.wait_for_selector(f".assistant[data-done='true'] >> nth={i}", timeout=60_000)
            page.locator(".assistant .up").first.click()
            page.wait_for_timeout(500)
            page.screenshot(path=str(out))
            print(f"{out}: {n_questions} questions")
        finally:
            stop()
            service.close()


if __name__ == "__main__":
    raise SystemExit(main())
