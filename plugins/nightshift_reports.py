"""Model reports inside the Airflow UI: a "Model reports" nav entry and a "Report" tab per run.

Served by a FastAPI app that the api-server mounts under /nightshift-reports. Every route needs
an authenticated Airflow user (API token or the UI's session cookie) and lists only the
pipelines whose DAGs that user may read. Files are served from the reports root only.

The pages need no script, and they show values from users' data under the api-server's own
origin, so every response forbids script (Content-Security-Policy) and sniffing. Airflow's UI
frames a "nav" external view with ``allow-scripts allow-same-origin``, which a plugin cannot
change; the policy's ``sandbox`` directive sandboxes the framed page again, without scripts.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from nightshift.ops.deadline import ReportDeadline
from nightshift.ops.timetable import NightlyTimetable
from nightshift.publishing.alerts import REPORTS_ROUTE as PREFIX

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",  # no script, font, fetch or frame; the pages are self-contained
        "style-src 'unsafe-inline'",  # the inline <style> and matplotlib's style attributes
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",  # only the Airflow UI may frame a report
        # Links still work: "report" opens a new tab, "Airflow run" the UI around the frame.
        "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox"
        " allow-top-navigation-by-user-activation",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

app = FastAPI(title="nightshift model reports", docs_url=None, redoc_url=None, openapi_url=None)


@app.middleware("http")
async def _security_headers(request: Request, call_next: Any) -> Any:
    """Add :data:`SECURITY_HEADERS` to every response: pages, files, errors and redirects."""
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    return response


def _readable_pipelines(user: Any) -> dict[str, Any]:
    """Return the valid pipelines, by name, whose DAG ``user`` may read."""
    from airflow.api_fastapi.app import get_auth_manager

    from nightshift.config.pipeline import load_pipelines

    manager = get_auth_manager()
    pipelines, _ = load_pipelines()
    return {
        p.name: p
        for p in pipelines
        if manager.is_authorized_dag(method="GET", user=user, details=DagDetails(id=p.dag_id))
    }


User = Annotated[Any, Depends(get_user)]


def _pipeline(user: Any, name: str) -> Any:
    pipeline = _readable_pipelines(user).get(name)
    if pipeline is None:
        raise HTTPException(404, f"no pipeline '{name}' you can read")
    return pipeline


@app.exception_handler(HTTPException)
async def _login_or_error(request: Request, exc: HTTPException) -> Any:
    """Send a browser without a session to the login page; API clients get the status."""
    if exc.status_code == 401 and "text/html" in request.headers.get("accept", ""):
        from airflow.api_fastapi.app import get_auth_manager

        login = get_auth_manager().get_url_login(next_url=str(request.url))
        return RedirectResponse(login, status_code=303)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


@app.get("/", response_class=HTMLResponse)
def index(user: User) -> str:
    """The reports index: per pipeline, its trend and its runs by date."""
    from nightshift.publishing.report import render_index
    from nightshift.publishing.report_index import list_runs

    pipelines = _readable_pipelines(user)
    return render_index({name: (p, list_runs(p)) for name, p in sorted(pipelines.items())})


@app.get("/runs.json")
def runs(user: User) -> dict[str, list[dict[str, Any]]]:
    """Every published run the user may read, as JSON."""
    from dataclasses import asdict

    from nightshift.publishing.report_index import list_runs

    return {
        name: [
            {**asdict(run), "partition_date": str(run.partition_date)}
            for run in list_runs(pipeline)
        ]
        for name, pipeline in sorted(_readable_pipelines(user).items())
    }


@app.get("/by-run/{dag_id}/{run_id}")
def by_run(dag_id: str, run_id: str, user: User) -> Any:
    """Redirect an Airflow run to its report (the "Report" tab of a DAG run)."""
    from nightshift.publishing.report_index import find_run

    name = dag_id.removeprefix("nightshift_")
    run = find_run(_pipeline(user, name), run_id)
    if run is None:
        return HTMLResponse(
            f"<p>No report has been published for run <code>{_escape(run_id)}</code> yet: it is "
            "written by the run's <code>publish</code> task.</p>",
            status_code=404,
        )
    return RedirectResponse(f"{PREFIX}/files/{name}/{run.report}", status_code=303)


@app.get("/files/{pipeline}/{path:path}")
def files(pipeline: str, path: str, user: User) -> FileResponse:
    """Serve a file from the pipeline's reports folder, and nothing outside it."""
    from nightshift.publishing.report_index import UnsafePath, pipeline_reports_root, safe_path

    root = pipeline_reports_root(_pipeline(user, pipeline))
    try:
        target = safe_path(root, path)
    except UnsafePath as exc:
        raise HTTPException(400, str(exc)) from None
    except FileNotFoundError:
        raise HTTPException(404, f"no file '{path}' in {pipeline}'s reports") from None
    return FileResponse(target)


def _escape(text: str) -> str:
    from html import escape

    return escape(text, quote=True)


class NightshiftReportsPlugin(AirflowPlugin):
    """Registers the reports app, the Model reports nav entry and the Report tab."""

    name = "nightshift_reports"
    # Airflow decodes a custom deadline reference only if a plugin registers it.
    deadline_references: ClassVar[list[Any]] = [ReportDeadline]
    # And a timetable it did not ship: the nightly one, keyed by the date each run processes.
    timetables: ClassVar[list[Any]] = [NightlyTimetable]
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": app, "url_prefix": PREFIX, "name": "nightshift model reports"}
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Model reports",
            "href": f"{PREFIX.lstrip('/')}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "model-reports",
        },
        {
            "name": "Report",
            "href": f"{PREFIX.lstrip('/')}/by-run/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "model-report-run",
        },
    ]
