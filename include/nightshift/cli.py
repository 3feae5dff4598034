"""nightshift: nightly ETL and training pipelines on Airflow, Dask, XGBoost and scikit-learn.

Run a date in this process (run), drive the local Airflow services (up, demo, backfill, down),
check pipeline YAMLs (check, init), and look after models (champion, promote, rollback) and
held input (quarantine). "nightshift COMMAND --help" says more about each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shlex
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from nightshift.config.pipeline import (
    ConfigError,
    Pipeline,
    Stage,
    find_pipeline,
    load_pipelines,
    pipeline_files,
    pipelines_dir,
)
from nightshift.config.records import NightSummary, iso_or_empty
from nightshift.publishing.tracking import RegistryError
from nightshift.storage.quarantine import NoHold


class CommandError(ValueError):
    """A command-line option is wrong; the message names the option."""

    def __init__(self, option: str, problem: str) -> None:
        super().__init__(f"{option}: {problem}")


def pipeline_named(name: str | None) -> Pipeline:
    """Return the pipeline ``--pipeline`` names, or the only one when it names none."""
    names = [path.stem for path in pipeline_files()]
    where = f"in {pipelines_dir()}"
    if not names:
        raise CommandError("--pipeline", f"no pipeline YAML {where}: `nightshift init` writes one")
    if name is None:
        if len(names) > 1:
            raise CommandError("--pipeline", f"which pipeline? one of: {', '.join(names)}")
        name = names[0]
    if name not in names:
        raise CommandError("--pipeline", f"no pipeline '{name}' {where} (have: {', '.join(names)})")
    return find_pipeline(name)


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a date (YYYY-MM-DD)") from None


def _quiet_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("nightshift").setLevel(logging.INFO)
    for noisy in ("distributed", "bokeh", "tornado", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    """Run every stage of one date in this process (no Airflow); print the report path."""
    from nightshift.config.run_date import last_complete_day
    from nightshift.night.stages import run_nightly

    pipeline = pipeline_named(args.pipeline)
    day = args.date or last_complete_day(pipeline)
    total = len(Stage)

    def done(stage: str, outcome: dict[str, Any]) -> None:
        position = list(Stage).index(Stage(stage)) + 1
        print(f"  [{position}/{total}] {stage}: {outcome['seconds']:.1f} s", file=sys.stderr)

    results = run_nightly(pipeline, day, run_id=f"cli__{day}", on_stage=done)
    summary = {stage: result["seconds"] for stage, result in results.items()}
    print(
        json.dumps(
            {"stage_seconds": summary, **results[Stage.EVALUATE], **results[Stage.PUBLISH]},
            indent=1,
        )
    )
    return 0


def _registry(args: argparse.Namespace) -> tuple[Any, str]:
    from nightshift.models.kinds import is_learned
    from nightshift.publishing import tracking

    pipeline = pipeline_named(args.pipeline)
    known = [m.name for m in pipeline.models if is_learned(m.kind)]
    if args.model not in known:
        raise CommandError("--model", f"no model '{args.model}' in {pipeline.name}; one of {known}")
    return tracking.client(pipeline), tracking.registered_name(pipeline.name, args.model)


def cmd_champion(args: argparse.Namespace) -> int:
    """Print the champion of a pipeline's model and the history of champion changes."""
    from nightshift.publishing import tracking

    mlflow_client, name = _registry(args)
    current = tracking.champion(mlflow_client, name)
    history = tracking.champion_history(mlflow_client, name)
    shown = current.to_dict() if current is not None else None
    print(json.dumps({"registered_model": name, "champion": shown, "history": history}, indent=1))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Make a model version the champion by hand (the alias moves; the reason is recorded)."""
    from nightshift.publishing import tracking

    mlflow_client, name = _registry(args)
    champion = tracking.promote(mlflow_client, name, args.version, args.reason)
    print(
        f"{name}: champion is now v{champion.version} "
        f"(trained for {iso_or_empty(champion.trained_for)})"
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Put the previous champion back."""
    from nightshift.publishing import tracking

    mlflow_client, name = _registry(args)
    champion = tracking.rollback(mlflow_client, name, args.reason)
    print(
        f"{name}: rolled back; champion is now v{champion.version} "
        f"(trained for {iso_or_empty(champion.trained_for)})"
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write a starter pipeline YAML from a sample file of the user's data."""
    from nightshift.config.pipeline import pipelines_dir
    from nightshift.starter import infer, pipeline_name, read_sample, starter_yaml

    source = Path(args.sample)
    if not source.is_file():
        raise CommandError("--from", f"{source}: no such file")
    try:
        frame = read_sample(source)
        columns = infer(frame)
    except ValueError as exc:
        raise CommandError("--from", f"{source}: {exc}") from None
    name = args.name or pipeline_name(source)
    target = Path(args.out) if args.out else pipelines_dir() / f"{name}.yaml"
    if target.exists() and not args.force:
        raise CommandError("--out", f"{target} already exists; choose another --out or --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(starter_yaml(name, source, columns))
    print(f"wrote {target} ({len(frame.columns)} columns from {len(frame):,} sample rows)")
    print("next: fill in its TODOs (label, features, timezone), then `nightshift check`")
    return 0


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    """Print each quarantined date: whether its newest hold still refuses the file, and why."""
    from nightshift.storage.lake import lake_for
    from nightshift.storage.quarantine import held_dates, holds

    pipelines = [pipeline_named(args.pipeline)] if args.pipeline else load_pipelines()[0]
    print("pipeline\tdate\tstate\tstage\tfolder\twhy")
    for pipeline in pipelines:
        lake = lake_for(pipeline)
        for day in held_dates(lake):
            found = holds(lake, day)
            if not found:
                continue
            newest = found[0]
            state = "released" if newest.released else "holding"
            why = newest.why.splitlines()[0][:200]
            print(f"{pipeline.name}\t{day}\t{state}\t{newest.stage}\t{newest.folder}\t{why}")
    return 0


def cmd_quarantine_release(args: argparse.Namespace) -> int:
    """Release a date's quarantine hold: its next run reads the same file again."""
    import getpass

    from nightshift.storage.lake import lake_for
    from nightshift.storage.quarantine import release

    pipeline = pipeline_named(args.pipeline)
    lake = lake_for(pipeline)
    hold = release(lake, args.date, args.reason, by=getpass.getuser())
    print(
        f"{pipeline.name} {args.date}: released {hold.folder}; the next run of this date reads "
        f"{hold.origin} again (re-run it: clear the run in the UI, or `nightshift run`)"
    )
    return 0


def cmd_validate_config(args: argparse.Namespace) -> int:
    """Validate every pipeline YAML; with --production, also refuse unsafe deployment settings."""
    pipelines, errors = load_pipelines()
    for pipeline in pipelines:
        print(f"ok     {pipeline.source_file} -> DAG {pipeline.dag_id}")
    for error in errors:
        for line in str(error).splitlines():  # every problem of the file, one per line
            print(f"error  {line}")
    problems: list[str] = []
    if args.production:
        import os

        from airflow.configuration import conf

        from nightshift.ops.production import production_problems

        def airflow_setting(section: str, key: str) -> str | None:
            value = conf.get(section, key, fallback=None)
            return None if value is None else str(value)

        access = {p.name: dict(p.access) for p in pipelines}
        problems = production_problems(airflow_setting, os.environ, access)
        for problem in problems:
            print(f"refuse {problem}")
        if not problems:
            print("ok     production settings: auth, Fernet key, database, Dask binds, passwords")
    return 1 if errors or problems else 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print the local Airflow's environment as shell exports."""
    from nightshift.ops.local_airflow import LocalAirflow

    airflow = LocalAirflow()
    for key, value in sorted(
        airflow.env(with_dask=airflow.pid("dask-scheduler") is not None).items()
    ):
        print(f"export {key}={shlex.quote(value)}")
    # The shell that evals this finds this virtualenv's `airflow` first.
    print(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start Airflow (and a Dask cluster) on this machine; print where."""
    from nightshift.ops.local_airflow import LocalAirflow

    airflow = LocalAirflow()
    airflow.start(dask=not args.no_dask)
    print(f"Airflow UI: {airflow.base_url}  (user: admin, password: {airflow.password()})")
    if not args.no_dask:
        print(f"Dask dashboard: http://127.0.0.1:{airflow.dask_dashboard_port}/status")
    print(f"Services: {airflow.running()}  logs: {airflow.home / 'run'}")
    print("Stop everything with: make down")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop everything ``nightshift up`` started, by its pids."""
    from nightshift.ops.local_airflow import LocalAirflow

    stopped = LocalAirflow().stop()
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the running local services and their pids."""
    from nightshift.ops.local_airflow import LocalAirflow

    print(json.dumps(LocalAirflow().running(), indent=1))
    return 0


def cmd_roles(args: argparse.Namespace) -> int:
    """Create or update the team roles the pipelines name (Airflow's FAB auth manager)."""
    from nightshift.access import sync_team_roles

    pipelines, errors = load_pipelines()
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    roles = sync_team_roles(pipelines)
    for role, level in roles.items():
        dags = [p.dag_id for p in pipelines if role in p.access]
        print(f"role {role}: {level} ({', '.join(dags)})")
    if not roles:
        print("no pipeline names a team role (access:)")
    return 1 if errors else 0


def _first_scheduled_run(airflow: Any, dag_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scheduled = [r for r in airflow.runs(dag_id) if r["run_type"] == "scheduled"]
        if scheduled:
            return str(scheduled[0]["dag_run_id"])
        time.sleep(2)
    raise TimeoutError(f"{dag_id}: the scheduler started no run within {timeout}s")


def _run_date(airflow: Any, dag_id: str, run_id: str) -> dt.date:
    """Return the date a finished run processed (its ingest task's XCom)."""
    from nightshift.night.results import Ingested

    entry = airflow.api(
        "GET",
        f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/ingest/xcomEntries/"
        "return_value",
    )
    return Ingested.from_xcom(entry["value"]).partition_date


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the services, run one nightly DAG run under the real scheduler, print the report."""
    from nightshift.ops.local_airflow import LocalAirflow

    pipeline = pipeline_named(args.pipeline)
    airflow = LocalAirflow()
    already_up = bool(airflow.running())
    started = time.monotonic()
    try:
        print(f"starting Airflow and Dask in {airflow.home} ...", flush=True)
        airflow.start()
        airflow.wait_for_dag(pipeline.dag_id)
        airflow.unpause(pipeline.dag_id)
        if args.date is None:
            # Unpausing lets the scheduler start the latest complete night (catchup is off):
            # that scheduled run is the nightly run the demo shows.
            run_id = _first_scheduled_run(airflow, pipeline.dag_id)
            print(f"the scheduler started {pipeline.dag_id} run {run_id}; waiting ...", flush=True)
        else:
            run_id = airflow.trigger(pipeline.dag_id, {"run_date": args.date.isoformat()})
            print(f"triggered {pipeline.dag_id} run {run_id} for {args.date}; waiting ...")
        run = airflow.watch_run(
            pipeline.dag_id, run_id, _print_progress, timeout=3600, progress=_print_task_progress
        )
        states = airflow.task_states(pipeline.dag_id, run_id)
        print(f"run {run['state']} in {time.monotonic() - started:.0f}s: {states}")
        if run["state"] != "success":
            print(
                f"see the task logs under {airflow.home / 'logs'} or the UI at {airflow.base_url}",
                file=sys.stderr,
            )
            return 1
        day = _run_date(airflow, pipeline.dag_id, run_id)
        folder = pipeline.report_folder(day)
        night = NightSummary.from_dict(json.loads(Path(folder.metrics).read_text())).evaluation
        for name in night.ranking:
            print(
                f"  {name:>14}: "
                + ", ".join(
                    f"{k} {v:.4f}"
                    for k, v in night.models[name].metrics.items()
                    if isinstance(v, float) and k in ("roc_auc", "log_loss", "f1", "rmse", "r2")
                )
            )
        print(f"report:  {folder.report}")
        print(f"metrics: {folder.metrics}")
        return 0
    finally:
        if not already_up and not args.keep_running:
            airflow.stop()
        elif args.keep_running:
            print(
                f"services still running; UI {airflow.base_url} (user: admin, password: "
                f"{airflow.password()}); stop with: make down"
            )


def progress_line(states: dict[str, str]) -> str:
    """One line saying how far a run is: tasks done of all, and what runs now."""
    done = [task for task, state in states.items() if state in ("success", "skipped")]
    running = [task for task, state in states.items() if state in ("running", "deferred")]
    failed = [task for task, state in states.items() if state in ("failed", "upstream_failed")]
    line = f"  {len(done)}/{len(states)} tasks done"
    if running:
        line += f"; running: {', '.join(running)}"
    if failed:
        line += f"; failed: {', '.join(failed)}"
    return line


def cmd_backfill(args: argparse.Namespace) -> int:
    """Backfill the dates --from to --to under the local Airflow; follow the nights."""
    from nightshift.ops import backfill
    from nightshift.ops.local_airflow import LocalAirflow

    pipeline = pipeline_named(args.pipeline)
    if args.last < args.first:
        print(f"error: --to {args.last} is before --from {args.first}", file=sys.stderr)
        return 2
    dates = backfill.night_dates(args.first, args.last)
    airflow = LocalAirflow()
    if "scheduler" not in airflow.running():
        print(
            f"error: no scheduler runs from {airflow.home}: `make up` starts one", file=sys.stderr
        )
        return 1
    options = ["--max-active-runs", str(args.max_active_runs), "--reprocess-behavior", args.rerun]
    options += ["--run-backwards"] if args.backwards else []
    if args.dry_run:
        print(f"{pipeline.dag_id}: {len(dates)} nights, {dates[0]} to {dates[-1]} (dry run)")
        listed = airflow.backfill_dry_run(pipeline.dag_id, dates[0], dates[-1], *options)
        # Airflow's table of runs, without the log lines its CLI prints before it.
        print(listed[listed.find("Runs to be attempted") :] if "Runs to be" in listed else listed)
        return 0
    if not _unpaused_for_backfill(airflow, pipeline.dag_id, args.unpause):
        return 1
    print(f"backfilling {pipeline.dag_id}: {len(dates)} nights, {dates[0]} to {dates[-1]}")
    result = backfill.backfill(airflow, pipeline, dates, options, _print_flushed)
    for day, state in result.states.items():
        report = pipeline.reports_dir(dt.date.fromisoformat(day))
        print(f"  {day}: {state or 'not run'}  {report}")
    return 0 if all(state == "success" for state in result.states.values()) else 1


def _unpaused_for_backfill(airflow: Any, dag_id: str, unpause: bool) -> bool:
    """Whether ``dag_id`` is unpaused (made so if ``unpause``): Airflow starts no run of a
    paused DAG, so a backfill of one would wait forever. Say what was done or what to do."""
    if not airflow.api("GET", f"dags/{dag_id}")["is_paused"]:
        return True
    if unpause:
        airflow.unpause(dag_id)
        print(
            f"unpaused {dag_id} for the backfill; it now also runs on its nightly schedule "
            f"(pause it again in the UI, or: airflow dags pause {dag_id})"
        )
        return True
    print(
        f"error: {dag_id} is paused (pipelines start paused), and Airflow starts no run of a "
        "paused DAG: the backfill would wait forever. Add --unpause to unpause it (it then "
        f"also runs nightly), or unpause it in the UI, or: airflow dags unpause {dag_id}",
        file=sys.stderr,
    )
    return False


def _print_flushed(line: str) -> None:
    print(line, flush=True)


def _print_progress(states: dict[str, str]) -> None:
    print(progress_line(states), flush=True)


def _print_task_progress(task_id: str, line: str) -> None:
    print(f"    {task_id}: {line}", flush=True)


def _add_pipeline(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """Add ``--pipeline``: the only pipeline by default, or ``default`` when given."""
    shown = f"default: {default}" if default else "default: the only one there is"
    parser.add_argument(
        "--pipeline",
        default=default,
        metavar="NAME",
        help=f"the pipeline's name (its YAML's file name); {shown}",
    )


def cmd_dask_certs(args: argparse.Namespace) -> int:
    """Write a certificate authority and the scheduler's, workers' and clients' certificates,
    and print the settings each machine's processes need."""
    from nightshift.ops.dask_tls import make_certificates, role_env

    try:
        files = make_certificates(args.folder, args.host, args.days)
    except FileExistsError as exc:
        print(f"nightshift dask-certs: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(p.name for p in files.written())} in {args.folder}")
    print("keep ca-key.pem off the machines; copy the rest where each role runs. Settings:")
    for role in ("scheduler", "worker", "client"):
        print(f"# {role}" + (" (Airflow's tasks)" if role == "client" else ""))
        for name, value in role_env(files, role).items():
            print(f"{name}={value}")
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per ``cmd_*`` function."""
    parser = argparse.ArgumentParser(prog="nightshift", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("-v", "--verbose", action="store_true", help="log more; tracebacks too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run one date of a pipeline in this process (no Airflow)")
    _add_pipeline(run)
    run.add_argument(
        "--date",
        type=_date,
        metavar="DATE",
        help="default: yesterday in the pipeline's timezone, as a scheduled run's",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate every pipeline YAML")
    check.add_argument(
        "--production",
        action="store_true",
        help="also refuse unsafe deployment settings (compose's init service runs this)",
    )
    check.set_defaults(func=cmd_validate_config)

    env = sub.add_parser("env", help="print the local Airflow's environment (eval it)")
    env.set_defaults(func=cmd_env)

    up = sub.add_parser("up", help="start Airflow and a Dask cluster on this machine")
    up.add_argument(
        "--no-dask", action="store_true", help="let each task start its own local Dask cluster"
    )
    up.set_defaults(func=cmd_up)

    sub.add_parser(
        "roles", help="create the team roles the pipelines' access: names (FAB auth manager)"
    ).set_defaults(func=cmd_roles)
    sub.add_parser("down", help="stop everything 'up' started").set_defaults(func=cmd_down)
    sub.add_parser("status", help="list the running services").set_defaults(func=cmd_status)
    _backfill_command(sub)
    _demo_command(sub)
    _registry_commands(sub)
    _quarantine_commands(sub)
    _init_command(sub)
    return parser


def _demo_command(sub: Any) -> None:
    """Add ``demo``: start the services, one night under the real scheduler, the report."""
    demo = sub.add_parser("demo", help="one nightly run under the real scheduler (make demo)")
    _add_pipeline(demo, default="retail_conversion")
    demo.add_argument(
        "--date",
        type=_date,
        default=None,
        metavar="DATE",
        help="the night to run; default: the scheduler's latest complete night",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave Airflow and Dask running to look at the run in the UI (stop: make down)",
    )
    demo.set_defaults(func=cmd_demo)


def _init_command(sub: Any) -> None:
    """Add ``init``: a starter pipeline YAML from a sample of the user's data."""
    init = sub.add_parser("init", help="write a starter pipeline YAML from a sample file")
    init.add_argument(
        "--from", dest="sample", required=True, metavar="FILE", help="a CSV or Parquet sample"
    )
    init.add_argument(
        "--name", default=None, help="the pipeline's name; default: from the file or folder name"
    )
    init.add_argument(
        "--out", default=None, metavar="FILE", help="default: <pipelines folder>/<name>.yaml"
    )
    init.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    init.set_defaults(func=cmd_init)


def _backfill_command(sub: Any) -> None:
    """Add ``backfill``: the nights of a range of dates, under the local Airflow."""
    from nightshift.ops.backfill import REPROCESS

    backfill = sub.add_parser(
        "backfill", help="run the nights of a range of dates under the local Airflow (make up)"
    )
    _add_pipeline(backfill)
    backfill.add_argument(
        "--from", dest="first", type=_date, required=True, metavar="DATE", help="the first date"
    )
    backfill.add_argument(
        "--to", dest="last", type=_date, required=True, metavar="DATE", help="the last date"
    )
    backfill.add_argument(
        "--rerun",
        choices=REPROCESS,
        default="none",
        help="none: skip dates already run; failed: re-run the failed ones; completed: all "
        "(default: none)",
    )
    backfill.add_argument(
        "--max-active-runs", type=int, default=1, metavar="N", help="nights at once (default: 1)"
    )
    backfill.add_argument("--backwards", action="store_true", help="newest date first")
    backfill.add_argument(
        "--unpause",
        action="store_true",
        help="unpause the pipeline's DAG if it is paused (a paused DAG's runs never start)",
    )
    backfill.add_argument(
        "--dry-run", action="store_true", help="list the nights it would create, create none"
    )
    backfill.set_defaults(func=cmd_backfill)


def _quarantine_commands(sub: Any) -> None:
    """Add ``quarantine list`` and ``quarantine release``."""
    quarantine = sub.add_parser("quarantine", help="list or release held input").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    listing = quarantine.add_parser("list", help="every quarantined date and why")
    listing.add_argument("--pipeline", default=None, metavar="NAME", help="default: every pipeline")
    listing.set_defaults(func=cmd_quarantine_list)
    release = quarantine.add_parser("release", help="read a date's held file again next run")
    _add_pipeline(release)
    release.add_argument("--date", type=_date, required=True, metavar="DATE", help="the held date")
    release.add_argument("--reason", required=True, help="recorded beside the hold")
    release.set_defaults(func=cmd_quarantine_release)


def _registry_commands(sub: Any) -> None:
    """Add ``champion``, ``promote`` and ``rollback``: the champion alias by hand."""
    certs = sub.add_parser(
        "dask-certs",
        help="make TLS certificates for a Dask cluster across machines (mutual authentication)",
    )
    certs.add_argument("folder", type=Path, help="where to write them (a new folder)")
    certs.add_argument(
        "--host",
        action="append",
        default=[],
        help="a name or address the scheduler is reached at (repeat; informational for Dask)",
    )
    certs.add_argument("--days", type=int, default=825, help="validity (default 825)")
    certs.set_defaults(func=cmd_dask_certs)
    champion = sub.add_parser("champion", help="show a model's champion and its history")
    promote = sub.add_parser("promote", help="make a registered model version the champion")
    rollback = sub.add_parser("rollback", help="put the previous champion back")
    for command in (champion, promote, rollback):
        _add_pipeline(command)
        command.add_argument(
            "--model", required=True, metavar="NAME", help="the model's name in the YAML"
        )
    promote.add_argument(
        "--version", type=int, required=True, metavar="N", help="the registered model version"
    )
    for command in (promote, rollback):
        command.add_argument("--reason", required=True, help="recorded in the registry")
    champion.set_defaults(func=cmd_champion)
    promote.set_defaults(func=cmd_promote)
    rollback.set_defaults(func=cmd_rollback)


def main(argv: list[str] | None = None) -> int:
    """Run the ``nightshift`` command; return its exit status (2: a configuration error)."""
    args = _parser().parse_args(argv)
    _quiet_logging(args.verbose)
    try:
        return int(args.func(args))
    except (ConfigError, CommandError, RegistryError, NoHold) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        # The data's own faults (a blocked or unreadable day) are expected, not crashes: say
        # what and where, one line each; -v shows the traceback as well.
        if args.verbose or not _is_data_error(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _is_data_error(exc: BaseException) -> bool:
    from nightshift.data.ingest import SourceError
    from nightshift.data.validate import DataValidationError

    return isinstance(exc, SourceError | DataValidationError)


if __name__ == "__main__":
    sys.exit(main())
