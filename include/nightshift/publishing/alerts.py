"""Tell the on-call team about a night: one message per channel, through Airflow notifiers.

What a night has to say is worked out by pure functions from what it wrote: the published
summary (``metrics.json``) for a night that finished, the quarantine hold for one that was
blocked. Delivery goes through a notifier per channel the pipeline declares (``alerts:``):
the SMTP provider's ``SmtpNotifier`` and :class:`WebhookNotifier`. A healthy night sends
nothing. Secrets stay in the Airflow connections the channels name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import logging
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier, Connection

from nightshift.config.pipeline import EmailChannel, Pipeline, ReportFolder, WebhookChannel
from nightshift.config.records import NightSummary
from nightshift.storage.quarantine import Hold

log = logging.getLogger(__name__)

# Where the api-server serves the reports plugin (plugins/nightshift_reports.py uses this).
REPORTS_ROUTE = "/nightshift-reports"
# The key under which a message travels in the notifier's context.
CONTEXT_KEY = "nightshift_alert"


@dataclasses.dataclass(frozen=True)
class Alert:
    """One message about one night of one pipeline."""

    pipeline: str
    date: str
    events: tuple[str, ...]  # what happened, from config.ALERT_EVENTS
    title: str  # one line: the pipeline, the date and the gist
    details: tuple[str, ...]  # one line per finding
    links: dict[str, str]  # "report", "validation", "run", "log" -> URL (or file path)

    @property
    def subject(self) -> str:
        """The e-mail subject."""
        return f"[nightshift] {self.title}"

    def text(self) -> str:
        """The message as plain text (the webhook's ``text``)."""
        lines = [self.title, *(f"- {d}" for d in self.details)]
        lines += [f"{name}: {url}" for name, url in self.links.items()]
        return "\n".join(lines)

    def html(self) -> str:
        """The message as an HTML e-mail body; every value is escaped."""
        items = "".join(f"<li>{html.escape(d)}</li>" for d in self.details)
        links = "".join(
            f'<li><a href="{html.escape(url)}">{html.escape(name)}</a></li>'
            for name, url in self.links.items()
        )
        return f"<p>{html.escape(self.title)}</p><ul>{items}</ul><ul>{links}</ul>"

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body: Slack's ``text`` and the same facts as fields. The text is
        escaped as Slack's message formatting says (``&``, ``<``, ``>``), so a data value such
        as ``<!channel>`` or ``<https://x|here>`` is shown, never a mention or a link."""
        text = self.text().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return {"text": text, **dataclasses.asdict(self), "events": list(self.events)}


def links_for(
    pipeline: Pipeline,
    day: dt.date,
    airflow_url: str | None,
    run_id: str,
    page: str | None = "report",
) -> dict[str, str]:
    """The night's ``page`` (report or validation) and run: in the Airflow UI when it is known."""
    if airflow_url:
        folder = f"{airflow_url.rstrip('/')}{REPORTS_ROUTE}/files/{pipeline.name}/{day}"
    else:
        folder = pipeline.reports_dir(day)
    # page is "report" or "validation": the ReportFolder property of that name.
    found = {page: getattr(ReportFolder(folder), page)} if page else {}
    run_url = pipeline.airflow_run_url(airflow_url, run_id)
    if run_url:
        found["run"] = run_url
    return found


def night_alert(pipeline: Pipeline, summary: NightSummary, links: dict[str, str]) -> Alert | None:
    """Return the message a published night owes the team, or None for a healthy night.

    ``summary`` is the night's ``metrics.json``, read back (``NightSummary.from_dict``).
    Events: the champion kept because tonight's best model scored worse than it by more than
    ``alerts.regression``; drifted features; a window day left out because its input is held
    (quarantined); validation warnings on the held-out day and window days left out for want
    of data.
    """
    window = summary.training_window
    held = set(window.quarantined)
    left_out = {d: f"window day {d} left out: {why}" for d, why in window.left_out.items()}
    findings = {
        "regressed": _regressions(pipeline, summary),
        "drifted": _drifted(summary),
        "quarantined": [line for day, line in left_out.items() if day in held],
        "validation_warning": [
            *(_finding_line(f) for f in summary.data["held_out"].get("warnings", [])),
            *(line for day, line in left_out.items() if day not in held),
        ],
    }
    events = [e for e, lines in findings.items() if lines and e in pipeline.alerts.on]
    if not events:
        return None
    title = f"{pipeline.name} {summary.partition_date}: " + ", ".join(
        _EVENT_WORDS[e] for e in events
    )
    details = tuple(line for e in events for line in findings[e])
    day = summary.partition_date.isoformat()
    return Alert(pipeline.name, day, tuple(events), title, details, links)


_EVENT_WORDS = {
    "failed": "the night failed",
    "quarantined": "input quarantined",
    "regressed": "tonight's model regressed, champion kept",
    "drifted": "features drifted",
    "validation_warning": "validation warnings",
    "deadline_missed": "report not published by its deadline",
}


def _regressions(pipeline: Pipeline, summary: NightSummary) -> list[str]:
    """One line per model whose champion was kept and which scored below it beyond the bound."""
    metric = summary.evaluation.headline_metric
    sign = 1 if summary.evaluation.higher_is_better else -1
    lines = []
    for name, decision in summary.decisions.items():
        champion = decision.champion
        if decision.promoted or champion is None or not champion.metrics:
            continue
        new = decision.challenger.metrics.get(metric)
        old = champion.metrics.get(metric)
        if new is None or old is None or sign * (old - new) <= pipeline.alerts.regression:
            continue
        lines.append(
            f"{name}: {metric} {new:.4f} against its champion's {old:.4f} "
            f"(trained for {champion.trained_for or '?'}); kept: {decision.reason}"
        )
    return lines


def _drifted(summary: NightSummary) -> list[str]:
    """One line naming every drifted feature with its PSI, if any drifted."""
    drift = summary.evaluation.drift
    drifted = {n: e["psi"] for n, e in drift.items() if e.get("drifted")}
    if not drifted:
        return []
    named = ", ".join(f"{n} (PSI {psi:.2f})" for n, psi in sorted(drifted.items()))
    return [f"drifted against the training window: {named}"]


def _finding_line(finding: dict[str, Any]) -> str:
    """A validation finding in one line: where, which check, what was seen."""
    where = f"column '{finding['column']}'" if finding.get("column") else "the day"
    said = finding.get("message") or f"failed check '{finding.get('check')}'"
    return f"{where}: {said}"


def failure_alert(
    pipeline: Pipeline, day: dt.date, task_id: str | None, hold: Hold | None, links: dict[str, str]
) -> Alert:
    """The message for a night that failed after its retries (quarantined, when a hold says so)."""
    details: tuple[str, ...]
    if hold is not None:
        events: tuple[str, ...] = ("quarantined",)
        details = (
            f"the input of {day} failed validation and is held at {hold.folder}: {hold.why}",
            "training is blocked for this date until the file changes or the hold is released",
        )
    else:
        events = ("failed",)
        details = (f"task {task_id or '?'} failed after its retries; its log says why",)
    title = f"{pipeline.name} {day}: " + _EVENT_WORDS[events[0]]
    return Alert(pipeline.name, day.isoformat(), events, title, details, links)


def deadline_alert(pipeline: Pipeline, day: dt.date, deadline: str, links: dict[str, str]) -> Alert:
    """The message for a night whose report was not published by its deadline."""
    title = f"{pipeline.name} {day}: {_EVENT_WORDS['deadline_missed']} ({deadline})"
    details = (f"the report for {day} was due by {deadline} and has not been published",)
    return Alert(pipeline.name, day.isoformat(), ("deadline_missed",), title, details, links)


class WebhookNotifier(BaseNotifier):
    """POST the context's alert as JSON to the URL an Airflow connection holds."""

    def __init__(self, conn_id: str) -> None:
        super().__init__()
        self.conn_id = conn_id

    def notify(self, context: Any) -> None:
        """Send the alert; an answer other than 2xx raises."""
        alert: Alert = context[CONTEXT_KEY]
        url = webhook_url(Connection.get(self.conn_id))
        request = urllib.request.Request(
            url,
            data=json.dumps(alert.payload()).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def webhook_url(connection: Any) -> str:
    """The webhook's URL: the connection's host if it is a whole URL, else built from parts."""
    host = connection.host or ""
    if "://" in host:
        return str(host)
    if not host:
        raise ValueError(f"connection '{connection.conn_id}' has no host: set the webhook's URL")
    port = f":{connection.port}" if connection.port else ""
    endpoint = (connection.extra_dejson or {}).get("endpoint", "")
    path = endpoint if not endpoint or endpoint.startswith("/") else f"/{endpoint}"
    return f"{connection.schema or 'https'}://{host}{port}{path}"


def notifier_for(channel: EmailChannel | WebhookChannel) -> BaseNotifier:
    """The Airflow notifier of one channel; it reads the alert from the context it is given."""
    if isinstance(channel, WebhookChannel):
        return WebhookNotifier(channel.conn_id)
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    # Rendered from the context, so nothing in the message is ever read as a template.
    return SmtpNotifier(
        to=channel.to,
        from_email=channel.from_email,
        smtp_conn_id=channel.conn_id,
        subject=f"{{{{ {CONTEXT_KEY}.subject }}}}",
        html_content=f"{{{{ {CONTEXT_KEY}.html() }}}}",
    )


def deliver(pipeline: Pipeline, alert: Alert, context: Any) -> list[str]:
    """Send ``alert`` on every channel of the pipeline; return the channels that failed.

    A channel that fails is logged and the others still send: a broken mail server must not
    also silence the webhook, nor fail a night that has published.
    """
    failed = []
    for channel in pipeline.alerts.channels:
        kind = "email" if isinstance(channel, EmailChannel) else "webhook"
        try:
            notifier_for(channel)({**context, CONTEXT_KEY: alert})
        except Exception:  # every channel is tried; the failure is logged with its cause
            log.exception("%s: the %s alert via '%s' failed", alert.title, kind, channel.conn_id)
            failed.append(kind)
        else:
            log.info("%s: sent by %s via '%s'", alert.title, kind, channel.conn_id)
    return failed
