"""A real SMTP server (aiosmtpd) and a webhook receiver (http.server), both on 127.0.0.1,
that keep every message they get; and the Airflow connections that point at them."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SMTP_PASSWORD = "a-password-only-the-connection-knows"


@dataclass
class Inbox:
    """What the receivers got: e-mails (subject, body) and webhook posts (their JSON)."""

    mails: list[dict[str, str]] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    smtp_port: int = 0
    webhook_port: int = 0

    def connections(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables for both receivers (plain SMTP on loopback, no TLS)."""
        smtp = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": self.smtp_port,
            "login": "nightshift",
            "password": SMTP_PASSWORD,
            "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "ns@127.0.0.1"},
        }
        webhook = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": self.webhook_port,
            "schema": "http",
            "extra": {"endpoint": "/hooks/on-call"},
        }
        return {
            "AIRFLOW_CONN_NIGHTSHIFT_SMTP": json.dumps(smtp),
            "AIRFLOW_CONN_NIGHTSHIFT_WEBHOOK": json.dumps(webhook),
        }

    def count(self) -> tuple[int, int]:
        """Messages received so far: (e-mails, webhook posts)."""
        return len(self.mails), len(self.posts)

    def wait_for(self, mails: int, posts: int, timeout: float = 120, settle: float = 5) -> None:
        """Wait until at least this many arrived, then ``settle`` seconds more for extras."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got_mails, got_posts = self.count()
            if got_mails >= mails and got_posts >= posts:
                break
            time.sleep(0.5)
        time.sleep(settle)


class _Handler:
    """aiosmtpd handler: keep the subject and the decoded body of every message."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = message.get_body(preferencelist=("html", "plain"))
        self.inbox.mails.append(
            {
                "subject": str(message["subject"]),
                "to": ",".join(envelope.rcpt_tos),
                "body": body.get_content() if body is not None else "",
            }
        )
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    """Accept only the login and password the connection holds."""
    from aiosmtpd.smtp import AuthResult

    login, password = getattr(data, "login", b""), getattr(data, "password", b"")
    return AuthResult(success=(login, password) == (b"nightshift", SMTP_PASSWORD.encode()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def receivers() -> Iterator[Inbox]:
    """Start both receivers on loopback; stop them on exit."""
    from aiosmtpd.controller import Controller

    inbox = Inbox(smtp_port=_free_port())

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            inbox.posts.append({"path": self.path, **json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            return

    smtp = Controller(
        _Handler(inbox),
        hostname="127.0.0.1",
        port=inbox.smtp_port,
        authenticator=_authenticator,
        auth_require_tls=False,
    )
    http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    inbox.webhook_port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    smtp.start()
    thread.start()
    try:
        yield inbox
    finally:
        http.shutdown()
        http.server_close()
        smtp.stop()
