"""MLflow tracking and the model registry: runs, model versions and the ``champion`` alias.

One experiment per pipeline (``nightshift/<pipeline>``), one MLflow run per model per nightly
run, one registered model per pipeline and model (``<pipeline>.<model>``, the model's name
defaults to its kind). The champion is the registered model's alias ``champion``; a
registered-model tag keeps the history of champions, so a rollback knows where to go back to.

The embedded default is a SQLite store inside the project (``data/mlflow``), no server;
``output.mlflow`` or ``MLFLOW_TRACKING_URI`` points at a server instead (compose runs one).
Models are logged in safe formats: XGBoost as UBJ, scikit-learn through skops.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nightshift.config.pipeline import Pipeline
from nightshift.config.records import (
    ChampionRef,
    Decision,
    NightEvaluation,
    TrainingWindow,
    date_or_none,
)
from nightshift.config.settings import is_url, setting
from nightshift.evaluation.champion import trained_before

log = logging.getLogger(__name__)

ALIAS = "champion"
HISTORY_TAG = "nightshift.champion_history"
MLFLOW_DEFAULTS = {
    # MLflow must not phone home: pipelines run where only the package registries are reached.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow's own sklearn loader trusts the type list inside the model's MLmodel file, which
    # whoever wrote the model controls; nightshift loads through ``load_registered`` instead.
    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
}


class RegistryError(RuntimeError):
    """A registry operation cannot be done as asked; the message says which model and why."""


def registered_name(pipeline: str, model: str) -> str:
    """Return a model's name in the MLflow registry: ``<pipeline>.<model>``."""
    return f"{pipeline}.{model}"


def store(pipeline: Pipeline) -> tuple[str, str | None]:
    """Return the tracking URI and, for the embedded store, the artifact root."""
    location = pipeline.mlflow_location()
    if is_url(location) or location.startswith("sqlite:"):
        return location, None
    Path(location).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{location}/mlflow.db", Path(location, "artifacts").as_uri()


def _mlflow_environment() -> None:
    """Put :data:`MLFLOW_DEFAULTS` in this process's environment where unset; every import of
    MLflow here comes after it (never at import of this module)."""
    for name, value in MLFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)


_READY: set[str] = set()


def _point_mlflow_at(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` in this process only.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` for child processes, and
    that would leak this pipeline's store into every process started afterwards (Airflow
    services, other pipelines' defaults); the variables are put back as they were.
    """
    _mlflow_environment()
    import mlflow

    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def client(pipeline: Pipeline) -> Any:
    """Return an ``MlflowClient`` on the pipeline's store (tracking and registry).

    The embedded SQLite store creates its tables on first use. Two tasks doing that at once
    (parallel backfill runs) would both run MLflow's migrations and leave a half-migrated
    database, so the first use in each process happens under an exclusive file lock.
    """
    _mlflow_environment()
    from mlflow import MlflowClient

    uri, artifacts = store(pipeline)
    _point_mlflow_at(uri)
    if artifacts is None or uri in _READY:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    import fcntl

    with open(Path(pipeline.mlflow_location(), ".init.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            mlflow_client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            mlflow_client.search_experiments(max_results=1)
            mlflow_client.search_registered_models(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY.add(uri)
    return mlflow_client


def experiment_id(mlflow_client: Any, pipeline: Pipeline) -> str:
    """Return the pipeline's experiment id, creating the experiment on first use."""
    _mlflow_environment()
    from mlflow.exceptions import MlflowException

    name = f"nightshift/{pipeline.name}"
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    _, artifacts = store(pipeline)
    location = f"{artifacts}/{pipeline.name}" if artifacts else None
    try:
        return str(mlflow_client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created meanwhile by a parallel run
        return str(mlflow_client.get_experiment_by_name(name).experiment_id)


def champion(mlflow_client: Any, name: str) -> ChampionRef | None:
    """Return the registered model ``name``'s champion version, or None if it has none."""
    _mlflow_environment()
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow_client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        return None
    return ChampionRef(
        registered_model=name,
        version=int(version.version),
        run_id=version.run_id,
        model=version.tags.get("nightshift.model"),
        trained_for=date_or_none(version.tags.get("nightshift.trained_for")),
    )


def champion_history(mlflow_client: Any, name: str) -> list[dict[str, Any]]:
    """Return the champion changes of ``name``, oldest first."""
    _mlflow_environment()
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException:
        return []
    history: list[dict[str, Any]] = json.loads(model.tags.get(HISTORY_TAG, "[]"))
    return history


def set_champion(
    mlflow_client: Any,
    name: str,
    version: int,
    reason: str,
    when: str,
    only_if_newer: dt.date | None = None,
) -> bool:
    """Point ``name``'s ``champion`` alias at ``version``, record why; return if it points there.

    With ``only_if_newer`` (a date), the alias moves only if the current champion was trained
    for an earlier date: a backfilled night that raced a newer one never moves it back. A
    version that is already champion (a retried publish) counts as moved.
    """
    current = champion(mlflow_client, name)
    if current is not None and current.version == int(version):
        return True
    if (
        current is not None
        and only_if_newer is not None
        and not trained_before(current.trained_for, only_if_newer)
    ):
        log.warning(
            "%s: champion v%s (trained for %s) is not older than %s; alias left alone",
            name,
            current.version,
            current.trained_for,
            only_if_newer,
        )
        return False
    mlflow_client.set_registered_model_alias(name, ALIAS, str(version))
    history = champion_history(mlflow_client, name)
    history.append({"version": int(version), "when": when, "reason": reason})
    _save_history(mlflow_client, name, history)
    return True


def record_refusal(mlflow_client: Any, name: str, version: int, reason: str, when: str) -> None:
    """Add to ``name``'s champion history a promotion its approver refused or let time out
    (``"event": "not approved"``); the alias stays where it was."""
    history = champion_history(mlflow_client, name)
    entry = {"version": int(version), "when": when, "reason": reason, "event": "not approved"}
    if entry not in history:  # a retried publish records it once
        _save_history(mlflow_client, name, [*history, entry])


def _save_history(mlflow_client: Any, name: str, history: list[dict[str, Any]]) -> None:
    # A registered-model tag holds at most 5000 characters; the newest entries matter most.
    while len(json.dumps(history)) > 4800 and len(history) > 1:
        history.pop(0)
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def promote(mlflow_client: Any, name: str, version: int, reason: str) -> ChampionRef:
    """Make ``version`` of ``name`` the champion by hand; return the new champion."""
    _mlflow_environment()
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"registered model '{name}' has no version {version}") from None
    set_champion(mlflow_client, name, version, f"manual: {reason}", _now())
    result = champion(mlflow_client, name)
    assert result is not None
    return result


def rollback(mlflow_client: Any, name: str, reason: str = "rollback") -> ChampionRef:
    """Point ``name``'s champion back at the version that was champion before this one."""
    current = champion(mlflow_client, name)
    if current is None:
        raise RegistryError(f"registered model '{name}' has no champion to roll back")
    history = champion_history(mlflow_client, name)
    versions = [entry["version"] for entry in history if "event" not in entry]  # alias moves
    # The champion before the current one: the history before the current version's last
    # promotion, skipping any earlier stints of the current version itself.
    before = versions[: _last_index(versions, current.version)]
    earlier = [v for v in before if v != current.version]
    if not earlier:
        raise RegistryError(
            f"registered model '{name}': champion v{current.version} has no predecessor "
            "in the champion history; use `nightshift promote` with a version"
        )
    set_champion(
        mlflow_client,
        name,
        earlier[-1],
        f"manual: {reason} from v{current.version}",
        _now(),
    )
    result = champion(mlflow_client, name)
    assert result is not None
    return result


def _last_index(values: list[int], value: int) -> int:
    positions = [i for i, v in enumerate(values) if v == value]
    return positions[-1] if positions else len(values)


def _now() -> str:
    # Only a record of when a person acted; nothing is computed from it.
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_url(pipeline: Pipeline, experiment: str, run_id: str) -> str | None:
    """Return a browser link to the MLflow run when the store is a server, else None."""
    uri, _ = store(pipeline)
    # The address the tasks use (http://mlflow:5000 in compose) is not always the one a
    # person's browser can reach; NIGHTSHIFT_MLFLOW_UI_URL says which one that is.
    browser = setting("NIGHTSHIFT_MLFLOW_UI_URL") or uri
    if browser.startswith(("http://", "https://")):
        return f"{browser.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
    return None


def _existing_runs(mlflow_client: Any, experiment: str, keys: dict[str, str]) -> list[Any]:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in keys.items())
    return list(mlflow_client.search_runs([experiment], filter_string=query, max_results=50))


def _log_model(trained: Any, registered: str | None) -> Any:
    """Log ``trained`` (a scorer read from the lake) to the active run in its kind's MLflow
    flavour; return the ModelInfo, or None for a kind that is not registered."""
    _mlflow_environment()
    from nightshift.models.kinds import kind_of

    return kind_of(trained.kind).log_model(trained, registered)


def load_registered(pipeline: Pipeline, name: str, version: str) -> Any:
    """Return registered model ``name`` at ``version`` (a number or ``@alias``), loaded safely.

    The kind whose MLflow flavour the model has loads it (``kinds.load_flavour``): XGBoost
    from UBJ/JSON, scikit-learn only from skops with nightshift's own trusted-types list
    (never the one stored beside the model). Anything else, a pickle above all, raises
    ``UnsafeModel`` naming the file.
    """
    import tempfile

    import yaml

    _mlflow_environment()
    from mlflow.artifacts import download_artifacts

    from nightshift.models.kinds import load_flavour

    client(pipeline)
    uri = f"models:/{name}{version if version.startswith('@') else '/' + version}"
    with tempfile.TemporaryDirectory() as folder:
        local = Path(download_artifacts(artifact_uri=uri, dst_path=folder))
        flavors = yaml.safe_load((local / "MLmodel").read_text())["flavors"]
        return load_flavour(flavors, local, uri)


@dataclass(frozen=True)
class NightLog:
    """Which night MLflow runs are logged for, and what they record."""

    partition_date: dt.date
    airflow_run_id: str
    evaluation: NightEvaluation
    window: TrainingWindow


def log_nightly(
    pipeline: Pipeline,
    night: NightLog,
    models: dict[str, tuple[Any, dict[str, str]]],
    artifacts: dict[str, bytes],
) -> dict[str, dict[str, Any]]:
    """Log one MLflow run per model of tonight's run; register the learned models.

    ``models`` maps a model name to its scorer (``kinds.load_scorer``) and lake files.
    Returns, per model, the MLflow run id, its link and the registered version. The same
    model (its files, byte for byte) scored the same on the same date is logged once: a
    retried publish, a cleared run and a re-processing backfill's new Airflow run of that date
    all find the run logged first and reuse it. A run left unfinished by a killed attempt is
    deleted and logged again.
    """
    from nightshift.models.kinds import is_learned

    mlflow_client = client(pipeline)
    experiment = experiment_id(mlflow_client, pipeline)
    logged: dict[str, dict[str, Any]] = {}
    partition_date, airflow_run_id = night.partition_date, night.airflow_run_id
    for name, (trained, files) in models.items():
        scored = night.evaluation.models.get(name)
        keys = {
            "nightshift.partition_date": partition_date.isoformat(),
            "nightshift.model": name,
            "nightshift.fingerprint": _fingerprint(files, scored.metrics if scored else {}),
        }
        learned = is_learned(trained.kind)
        registered = registered_name(pipeline.name, name) if learned else None
        reused = _finished_run(mlflow_client, experiment, keys)
        if reused is not None:
            run_id = reused.info.run_id
            version = reused.data.tags.get("nightshift.registered_version")
            log.info("%s: reusing MLflow run %s from an earlier attempt", name, run_id)
        else:
            run_id, version = _log_model_run(
                pipeline, experiment, keys, trained, night, artifacts, registered
            )
        if version is not None and registered is not None:
            tags = {
                "nightshift.model": name,
                "nightshift.trained_for": partition_date.isoformat(),
                "nightshift.airflow_run_id": airflow_run_id,
                "nightshift.lake": files.get("_partition", ""),
                "nightshift.mlflow_run": run_id,
            }
            for key, value in tags.items():
                mlflow_client.set_model_version_tag(registered, version, key, value)
        logged[name] = {
            "run_id": run_id,
            "experiment_id": experiment,
            "registered_model": registered,
            "version": int(version) if version is not None else None,
            "url": run_url(pipeline, experiment, run_id),
        }
    return logged


def _fingerprint(files: dict[str, str], metrics: dict[str, Any]) -> str:
    """A model's lake files and its held-out metrics, hashed: what makes two logs the same."""
    from nightshift.storage.lake import read_bytes

    digest = hashlib.sha256()
    for name in sorted(files.keys() - {"_partition"}):
        digest.update(name.encode() + hashlib.sha256(read_bytes(files[name])).digest())
    digest.update(json.dumps(metrics, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def _finished_run(mlflow_client: Any, experiment: str, keys: dict[str, str]) -> Any:
    """Return the finished run an earlier attempt logged with ``keys``, if any; delete the
    unfinished ones (a killed attempt's), so they are logged again."""
    reused = None
    for run in _existing_runs(mlflow_client, experiment, keys):
        if run.info.status == "FINISHED" and reused is None:
            reused = run
        else:
            mlflow_client.delete_run(run.info.run_id)
    return reused


def _log_model_run(
    pipeline: Pipeline,
    experiment: str,
    keys: dict[str, str],
    trained: Any,
    night: NightLog,
    artifacts: dict[str, bytes],
    registered: str | None,
) -> tuple[str, str | None]:
    """Log one model's MLflow run (parameters, held-out metrics, curves, the evaluation, the
    model, registered unless it is the baseline); return the run id and registered version."""
    _mlflow_environment()
    import mlflow

    name = keys["nightshift.model"]
    scored = night.evaluation.models[name]
    history = scored.history
    tags = {
        **keys,
        "nightshift.airflow_run_id": night.airflow_run_id,
        "nightshift.pipeline": pipeline.name,
        "nightshift.kind": trained.kind,
    }
    run_name = f"{keys['nightshift.partition_date']} {name}"
    with mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=tags) as run:
        mlflow.log_params(_run_params(pipeline, name, trained.kind, night.window, history))
        mlflow.log_metrics(
            {
                f"heldout_{k}": float(v)
                for k, v in scored.metrics.items()
                if isinstance(v, int | float) and v is not None
            }
        )
        mlflow_client = client(pipeline)
        _log_curves(mlflow_client, run.info.run_id, history)
        for filename, payload in artifacts.items():
            mlflow.log_text(payload.decode(), f"evaluation/{filename}")
        info = _log_model(trained, registered)
        if info is None:
            return run.info.run_id, None
        version = str(info.registered_model_version)
        mlflow_client.set_tag(run.info.run_id, "nightshift.registered_version", version)
        return run.info.run_id, version


# MLflow's REST API takes at most 1,000 metrics in one log-batch request.
METRICS_PER_REQUEST = 1000


def _log_curves(mlflow_client: Any, run_id: str, history: dict[str, Any]) -> None:
    """Log a model's curves (SGD's loss per epoch, the training metric per round) as steps of
    their metrics, a thousand to a request: one request a step made 150 of a night's MLflow
    requests at 150 rounds."""
    import time

    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    curves = {"epoch_loss": history.get("epoch_loss") or []}
    if history.get("train"):
        curves[f"train_{history['metric']}"] = history["train"]
    steps = [
        Metric(key, float(value), stamp, step)
        for key, values in curves.items()
        for step, value in enumerate(values, start=1)
    ]
    for start in range(0, len(steps), METRICS_PER_REQUEST):
        mlflow_client.log_batch(run_id, metrics=steps[start : start + METRICS_PER_REQUEST])


def _run_params(
    pipeline: Pipeline, name: str, kind: str, window: TrainingWindow, history: dict
) -> dict[str, str]:
    """Return a model run's parameters: the night's training settings and the model's own."""
    params: dict[str, Any] = {
        "model": name,
        "kind": kind,
        "window_days": pipeline.training.window_days,
        "batch_size": pipeline.training.batch_size,
        "sample_fraction": pipeline.training.sample_fraction,
        "threshold": pipeline.training.threshold,
        "window_start": window.start,
        "window_end": window.end,
    }
    params.update({f"param.{k}": v for k, v in (history.get("params") or {}).items()})
    return {k: str(v)[:500] for k, v in params.items()}


def record_decisions(
    pipeline: Pipeline,
    partition_date: dt.date,
    logged: dict[str, dict[str, Any]],
    decisions: dict[str, Decision],
    refused: set[str] | frozenset[str] = frozenset(),
) -> tuple[dict[str, Decision], dict[str, bool]]:
    """Move ``champion`` where the gate promoted; tag each run and version with its decision.
    The models in ``refused`` earned promotion but their approver refused it: that goes into
    the champion history too (the alias stays).

    Returns the decisions as recorded and, per registered model, whether its alias now points
    at tonight's version. A promotion that lost a race with a newer night (parallel backfills)
    is recorded as kept, with the reason, so the report says what really happened.
    """
    mlflow_client = client(pipeline)
    recorded = dict(decisions)
    moved: dict[str, bool] = {}
    for name, decision in decisions.items():
        entry = logged.get(name) or {}
        run_id, version = entry.get("run_id"), entry.get("version")
        if run_id is None or version is None:
            continue
        registered = entry["registered_model"]
        moved[name] = decision.promoted and set_champion(
            mlflow_client,
            registered,
            version,
            decision.reason,
            partition_date.isoformat(),
            only_if_newer=partition_date,
        )
        if decision.promoted and not moved[name]:
            decision = decision.lost_race(champion(mlflow_client, registered))
        recorded[name] = decision
        _tag_decision(mlflow_client, run_id, registered, version, decision)
        if name in refused:
            when = partition_date.isoformat()
            record_refusal(mlflow_client, registered, version, decision.reason, when)
    return recorded, moved


def _tag_decision(
    mlflow_client: Any, run_id: str, registered: str, version: int, decision: Decision
) -> None:
    """Tag the night's MLflow run and its registered version with the gate's decision."""
    mlflow_client.set_tag(run_id, "nightshift.promoted", str(decision.promoted).lower())
    mlflow_client.set_tag(run_id, "nightshift.decision", decision.reason[:4900])
    mlflow_client.set_model_version_tag(
        registered, str(version), "nightshift.decision", decision.reason[:4900]
    )


def log_report(
    pipeline: Pipeline, logged: dict[str, dict[str, Any]], html: str, metrics_json: bytes
) -> None:
    """Attach the rendered report and its metrics JSON to every MLflow run of the night."""
    mlflow_client = client(pipeline)
    for entry in logged.values():
        mlflow_client.log_text(entry["run_id"], html, "evaluation/report.html")
        mlflow_client.log_text(entry["run_id"], metrics_json.decode(), "evaluation/metrics.json")
