from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_jobqueue.events import EventsListener
from django_jobqueue.exceptions import JobQueueError
from django_jobqueue.management import logsetup
from django_jobqueue.terminal import safe_text


class Command(BaseCommand):
    help = (
        "Listen to the events channels of the queues and fire the django_jobqueue signals "
        "(job_enqueued, job_completed, ...) in this process, until SIGTERM or SIGINT. "
        "With -v 2 it also logs each event it fires, one line an event: 'event <queue> <event> job <id>'."
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
        logsetup.add_log_format_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        logsetup.setup(options["verbosity"], logsetup.unwrapped(self.stderr), log_format=options["log_format"])
        try:
            listener = EventsListener(options["queues"])
        except (JobQueueError, LookupError, ValueError) as exc:
            raise CommandError(safe_text(exc)) from exc

        def on_signal(signum: int, frame: Any) -> None:
            listener.stop()  # run() returns within a poll interval

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        listener.run()
