"""Experiment tracking: every training stage records its run in MLflow.

Taught in notebook 10 (section "Every training run, recorded"). Each training stage of the
course (pretraining, SFT, LoRA, the reward model, DPO, GRPO) opens :func:`track` around its
training: one MLflow run named after the stage, in the experiment ``llm-course/<stage>``,
with the stage's configuration as parameters (``config.<field>``, nested fields joined by
dots), its curves as metrics with their steps, its final figures as metrics, and, when the
run builds a cached artifact (:func:`course_utils.artifacts.load_or_build` with ``track=``),
the artifact as the tag ``course.artifact`` (``<name>/<key>``) with the artifact's own
configuration as ``artifact.<field>`` parameters. Stages trained by transformers or trl
(SFT, LoRA, reward model, DPO) log through the trainers' own MLflow integration
(``report_to="mlflow"``, :func:`report_to`), which joins the run :func:`track` opened; the
course's own loops (pretraining, GRPO) log their rows through :meth:`Tracker.log_metrics`.

Where runs go (read when a stage trains, never at import):

``MLFLOW_TRACKING_URI``  a team's tracking server (``http://...``) or any store MLflow knows;
                         default: the SQLite store ``<cache>/mlflow/mlflow.db`` in the artifact
                         cache (:func:`tracking_uri`), run files beside it in ``<cache>/mlflow/artifacts``.
``COURSE_TRACKING``      ``0``/``false``/``no``/``off`` turns tracking off
                         (:attr:`course_utils.settings.Settings.tracking`): nothing is recorded
                         and MLflow is not even imported.

Tracking never changes what a stage computes, and no tracking setting is part of an
artifact's key. MLflow is imported only when a run starts; its usage telemetry is off
unless ``MLFLOW_DISABLE_TELEMETRY`` says otherwise (the course works offline). Open the
local store in the browser with ``mlflow ui --backend-store-uri sqlite:///<cache>/mlflow/mlflow.db``
(README, "Experiment tracking").
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_utils.settings import Settings, get_settings

__all__ = [
    "EXPERIMENT_PREFIX",
    "Tracker",
    "artifact_run",
    "client",
    "experiment_name",
    "find_runs",
    "flatten",
    "guard_trainer",
    "log_to_run",
    "metric_history",
    "report_to",
    "store_dir",
    "track",
    "tracking_uri",
]

#: Experiments are named ``llm-course/<stage>``: runs of one stage share their parameters.
EXPERIMENT_PREFIX = "llm-course"

_MAX_PARAM = 6000  # MLflow's longest parameter value (characters); longer values are cut
_METRIC_NAME = re.compile(r"[^0-9A-Za-z_\-. :/]")  # characters MLflow refuses in metric names


def store_dir(settings: Settings | None = None) -> Path:
    """``<cache>/mlflow``: the local store (``mlflow.db``) and the runs' files (``artifacts/``)."""
    return (settings or get_settings()).cache_dir / "mlflow"


def tracking_uri(settings: Settings | None = None) -> str:
    """Where runs go: ``MLFLOW_TRACKING_URI`` if set, else the SQLite store in the artifact cache."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_dir(settings) / 'mlflow.db'}"


def experiment_name(stage: str) -> str:
    """The experiment that holds the runs of ``stage``: ``llm-course/<stage>``."""
    return f"{EXPERIMENT_PREFIX}/{stage}"


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """A configuration (dataclass, dict, or None) as MLflow parameters: nested fields joined
    with dots (``model.n_layer``), every value a string (lists and tuples as JSON)."""
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"A tracked config must be a dataclass instance or a dict, got {type(config).__name__}.")
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, default=str)[:_MAX_PARAM]
        else:
            out[name] = str(value)[:_MAX_PARAM]
    return out


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among ``metrics`` (bools and other values dropped), under names MLflow accepts."""
    out = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a 0-d tensor or array
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[_METRIC_NAME.sub("_", str(key))] = float(value)
    return out


def _mlflow():
    """Import MLflow (only when a run starts), with its usage telemetry off and its INFO lines (creating
    the store's tables, ...) quiet unless asked for (``MLFLOW_LOGGING_LEVEL``): a learner's command
    prints its own lines, and an error stays one sentence."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import mlflow

    return mlflow


def _say_failed(exc: BaseException) -> None:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    print(f"[tracking] {type(exc).__name__}: {first}; this run goes on without experiment tracking "
          "(COURSE_TRACKING=0 turns it off).", file=sys.stderr, flush=True)


@dataclass
class Tracker:
    """The run a stage logs into (what :func:`track` yields); every method does nothing when
    tracking is off (``run_id`` is None), so a stage calls them without asking."""

    run_id: str | None = None  # the MLflow run's id; None when tracking is off
    uri: str | None = None  # the tracking URI the run lives in

    @property
    def active(self) -> bool:
        """Is a run being recorded?"""
        return self.run_id is not None

    def failed(self, exc: BaseException) -> None:
        """Tracking broke (a locked or unreachable store, ...): say so once and stop tracking this run.
        Tracking never stops a stage: a 40-minute training run goes on without it."""
        if self.active:
            _say_failed(exc)
        self.run_id = None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the numbers among ``metrics`` (other values are skipped) at ``step``; a ``"step"``
        entry is the step itself, not a metric. Written at once to a local SQLite store (a
        background writer and the run's own reads would lock the file on a busy machine), in the
        background to a server."""
        values = _numeric({k: v for k, v in metrics.items() if not (step is not None and k == "step")})
        if self.active and values:
            try:
                _mlflow().log_metrics(values, step=step, run_id=self.run_id,
                                      synchronous=str(self.uri or "").startswith("sqlite"))
            except Exception as exc:  # noqa: BLE001  (whatever the store raised, the stage goes on)
                self.failed(exc)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters that the run does not have yet (a parameter never changes in MLflow)."""
        try:
            self._log_params(params)
        except Exception as exc:  # noqa: BLE001
            self.failed(exc)

    def _log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        mlflow = _mlflow()
        have = mlflow.get_run(self.run_id).data.params
        new = {k: v for k, v in ((k, str(v)[:_MAX_PARAM]) for k, v in params.items()) if k not in have}
        items = list(new.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per call
            mlflow.log_params(dict(items[i : i + 100]), run_id=self.run_id)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (strings) on the run."""
        if self.active and tags:
            try:
                mlflow_client = _mlflow().MlflowClient(self.uri)
                for key, value in tags.items():
                    mlflow_client.set_tag(self.run_id, key, str(value))
            except Exception as exc:  # noqa: BLE001
                self.failed(exc)


def _experiment_id(mlflow, stage: str, settings: Settings) -> str:
    """The experiment of ``stage``, created on first use; with the local store its run files go to
    ``<cache>/mlflow/artifacts`` (MLflow would otherwise put them in the working directory)."""
    name = experiment_name(stage)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    uri = tracking_uri(settings)
    location = None  # a server (or another store) decides where its runs' files go
    if uri.startswith("sqlite:///"):  # beside the database, not in the working directory
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by another process
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextlib.contextmanager
def track(stage: str, config: Any = None, *, artifact: str | None = None, tags: Mapping[str, Any] | None = None,
          run_name: str | None = None, prefix: str = "config.", settings: Settings | None = None) -> Iterator[Tracker]:
    """Record what happens inside as one MLflow run of ``stage``; yields a :class:`Tracker`.

    ``config`` (a dataclass or dict) is logged as parameters ``<prefix><field>``; ``artifact``
    (``"<name>/<key>"``) as the tag ``course.artifact``; ``tags`` as tags. The run is named
    ``run_name`` (default: ``stage``) in the experiment ``llm-course/<stage>`` and ends
    ``FINISHED``, or ``FAILED`` (``KILLED`` when interrupted) if the block raises.

    When a run is already active (a stage training inside another's run: the LoRA stage calls the
    SFT trainer, an artifact build wraps its stage), the block logs into that run instead of
    starting one: its parameters join the run's (those already there are kept) and the outer run
    ends it. With tracking off (``COURSE_TRACKING=0``) the tracker does nothing.
    """
    settings = settings or get_settings()
    if not settings.tracking:
        yield Tracker()
        return
    mlflow = _mlflow()
    run_tags = {"course.stage": stage, "course.mode": settings.mode, **(tags or {})}
    if artifact:
        run_tags["course.artifact"] = artifact
    active = mlflow.active_run()
    if active is not None:  # join the run that is already recording
        tracker = Tracker(active.info.run_id, mlflow.get_tracking_uri())
        tracker.log_params(flatten(config, prefix))
        tracker.set_tags({k: v for k, v in run_tags.items() if k != "course.stage"})
        try:
            yield tracker
        finally:
            _quietly(mlflow.flush_async_logging, tracker)
        return
    uri = tracking_uri(settings)
    try:
        if uri.startswith("sqlite:///"):  # SQLite creates the file, not its folder
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        run = mlflow.start_run(experiment_id=_experiment_id(mlflow, stage, settings), run_name=run_name or stage,
                               tags={k: str(v) for k, v in run_tags.items()})
    except Exception as exc:  # noqa: BLE001  (no store: the stage runs untracked)
        Tracker("-", uri).failed(exc)
        yield Tracker()
        return
    run_id = run.info.run_id
    tracker = Tracker(run_id, uri)
    status = "FINISHED"
    try:
        tracker.log_params(flatten(config, prefix))
        yield tracker
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        def close() -> None:
            mlflow.flush_async_logging()
            if mlflow.active_run() is not None and mlflow.active_run().info.run_id == run_id:
                mlflow.end_run(status)
            else:  # someone ended or replaced the active run inside the block: end ours by its id
                mlflow.MlflowClient(uri).set_terminated(run_id, status)

        _quietly(close, tracker)


def _quietly(fn, tracker: Tracker) -> None:
    """Run ``fn`` (closing a run); a tracking error is said once, never raised over the stage's own outcome."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        tracker.failed(exc)


def report_to(settings: Settings | None = None) -> str:
    """``report_to`` for a transformers/trl ``TrainingArguments``: ``"mlflow"`` inside a tracked run
    (the trainer's ``MLflowCallback`` then logs its arguments and every logged loss into that run),
    else ``"none"`` (so a trainer outside :func:`track` never starts a run of its own)."""
    if not (settings or get_settings()).tracking or "mlflow" not in sys.modules:
        return "none"
    return "mlflow" if sys.modules["mlflow"].active_run() is not None else "none"


def guard_trainer(trainer, tracker: Tracker | None = None) -> None:
    """Make ``trainer``'s MLflow integration (``report_to="mlflow"``) unable to stop its training: its
    ``MLflowCallback`` is swapped for a subclass whose hooks, when the store fails (locked, unreachable), stop
    and say so once: through ``tracker.failed`` when the stage's :class:`Tracker` is given (which then stops
    logging too), else by themselves. Without an ``MLflowCallback`` (tracking off) nothing changes."""
    from transformers.integrations import MLflowCallback

    if not any(isinstance(cb, MLflowCallback) for cb in trainer.callback_handler.callbacks):
        return

    class GuardedMLflowCallback(MLflowCallback):
        """transformers' own MLflow callback; a failing hook is said once, then the callback stops."""

        broken = False

        def _guarded(self, hook: str, *args: Any, **kwargs: Any) -> None:
            if self.broken:
                return
            try:
                getattr(MLflowCallback, hook)(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001  (whatever the store raised, training goes on)
                self.broken = True
                if tracker is not None:
                    tracker.failed(exc)
                else:
                    _say_failed(exc)

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self._guarded("on_train_begin", *args, **kwargs)

        def on_log(self, *args: Any, **kwargs: Any) -> None:
            self._guarded("on_log", *args, **kwargs)

        def on_save(self, *args: Any, **kwargs: Any) -> None:
            self._guarded("on_save", *args, **kwargs)

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self._guarded("on_train_end", *args, **kwargs)

    trainer.remove_callback(MLflowCallback)
    trainer.add_callback(GuardedMLflowCallback())


# ---------------------------------------------------------------------- reading runs back (notebook 10)
def client(settings: Settings | None = None):
    """MLflow's ``MlflowClient`` on the course's store (:func:`tracking_uri`); MLflow's own functions
    (``mlflow.search_runs``) are pointed there too. Notebook 10 reads a sweep's curves with it
    (``client.get_metric_history(run_id, "loss")``)."""
    mlflow = _mlflow()
    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def _store_exists(settings: Settings | None) -> bool:
    """False when the local store was never written (nothing tracked yet): reading it would create it."""
    uri = tracking_uri(settings)
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def find_runs(stage: str, *, settings: Settings | None = None, mode: str | None = None,
              with_artifact: bool | None = None, status: str | None = "FINISHED"):
    """The runs of ``stage`` as a pandas DataFrame (newest first; MLflow's columns ``run_id``,
    ``params.*``, ``metrics.*`` (last values), ``tags.*``), empty when there are none yet.

    ``mode``: only runs made in that mode (``"fast"``/``"learner"``); ``with_artifact``: True keeps
    only runs that built a cached artifact, False only the others (sweeps, notebook experiments);
    ``status``: the runs' status (None: any)."""
    import pandas as pd

    if not _store_exists(settings):
        return pd.DataFrame()
    mlflow, mlflow_client = _mlflow(), client(settings)
    experiment = mlflow_client.get_experiment_by_name(experiment_name(stage))
    if experiment is None:
        return pd.DataFrame()
    clauses = []
    if mode:
        clauses.append(f"tags.`course.mode` = '{mode}'")
    if status:
        clauses.append(f"attributes.status = '{status}'")
    runs = mlflow.search_runs(experiment_ids=[experiment.experiment_id], filter_string=" and ".join(clauses),
                              order_by=["attributes.start_time DESC"])
    if with_artifact is not None and len(runs):
        has = runs["tags.course.artifact"].notna() if "tags.course.artifact" in runs else pd.Series(False, runs.index)
        runs = runs[has if with_artifact else ~has].reset_index(drop=True)
    return runs


def artifact_run(path: str | Path, settings: Settings | None = None) -> dict[str, Any] | None:
    """The newest finished run that built the cached artifact in folder ``path``
    (``<cache>/<name>/<key>``): ``{"run_id", "run_name", "experiment", "stage", "uri"}``, or None
    when none is recorded (built with tracking off, or before tracking existed)."""
    path = Path(path)
    if not _store_exists(settings):
        return None
    mlflow, mlflow_client = _mlflow(), client(settings)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list", max_results=1,
                              filter_string=f"tags.`course.artifact` = '{path.parent.name}/{path.name}' "
                                            "and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"])
    if not runs:
        return None
    run = runs[0]
    experiment = mlflow_client.get_experiment(run.info.experiment_id)
    uri = tracking_uri(settings)
    link = (f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
            if uri.startswith(("http://", "https://")) else f"runs:/{run.info.run_id}")
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "experiment": experiment.name,
            "stage": run.data.tags.get("course.stage", ""), "uri": link}


def metric_history(run_id: str, key: str, settings: Settings | None = None) -> list[tuple[int, float]]:
    """``[(step, value), ...]`` of metric ``key`` of a run, in step order."""
    return sorted((m.step, m.value) for m in client(settings).get_metric_history(run_id, key))


def log_to_run(run_id: str, metrics: Mapping[str, Any], settings: Settings | None = None) -> None:
    """Add figures measured later (an evaluation) to a finished run, as metrics."""
    mlflow_client = client(settings)
    for key, value in _numeric(metrics).items():
        if math.isfinite(value):
            mlflow_client.log_metric(run_id, key, value)
