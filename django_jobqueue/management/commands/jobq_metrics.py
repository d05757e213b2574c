from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.management import logsetup
from django_jobqueue.metrics import build_registry
from django_jobqueue.terminal import safe_text


class Command(BaseCommand):
    help = (
        "Serve the queues' Prometheus metrics on http://ADDR:PORT/metrics (prometheus-client's own "
        "server, no authentication: keep it on a private network) until SIGTERM or SIGINT."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=9108, help="port to listen on (default: 9108)")
        parser.add_argument(
            "--addr",
            default="127.0.0.1",
            help="address to listen on (default: 127.0.0.1; 0.0.0.0 or :: for every interface)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logsetup.setup(options["verbosity"], logsetup.unwrapped(self.stderr))
        try:
            # Redis errors become jobq_up 0 on the page: the exporter keeps answering.
            registry = build_registry(report_errors=True)
        except JobQueueError as exc:
            raise CommandError(safe_text(exc)) from exc
        from prometheus_client import start_http_server

        try:
            server, thread = start_http_server(options["port"], addr=options["addr"], registry=registry)
        except OSError as exc:  # the port is taken, the address is not ours...
            raise CommandError(f"cannot listen on {options['addr']} port {options['port']}: {exc}") from exc
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        host, port = server.server_address[:2]
        self.stdout.write(f"serving metrics on http://{_url_host(str(host))}:{port}/metrics")
        self.stdout.flush()
        # A wait with a timeout, so that the main thread runs the signal handler soon.
        while not stop.wait(0.5):
            pass
        server.shutdown()  # serve_forever returns
        server.server_close()
        thread.join()
        self.stdout.write("stopped")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
