from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_jobqueue.events import EventsListener
from django_jobqueue.exceptions import JobQueueError


class Command(BaseCommand):
    help = (
        "Listen to the events channels of the queues and fire the django_jobqueue signals "
        "(job_enqueued, job_completed, ...) in this process, until SIGTERM or SIGINT."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--queue",
            "-q",
            action="append",
            dest="queues",
            metavar="Q",
            help="queue to listen to; repeat for several (default: every configured queue)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        level = logging.WARNING if verbosity == 0 else logging.DEBUG if verbosity >= 2 else logging.INFO
        log = logging.getLogger("django_jobqueue")
        if not log.handlers:
            handler = logging.StreamHandler(self.stderr._out)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
            log.propagate = False
        log.setLevel(level)
        try:
            listener = EventsListener(options["queues"])
        except (JobQueueError, LookupError, ValueError) as exc:
            raise CommandError(str(exc)) from exc

        def on_signal(signum: int, frame: Any) -> None:
            listener.stop()  # run() returns within a poll interval

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        listener.run()
