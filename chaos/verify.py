"""The end of a chaos run: every job accounted for, per kind, from the queue's Redis,
the ledger and the workers' logs; the figures printed and the failed checks returned.

Words used in the figures:

* a *run* is one execution of the handler, as the ledger recorded it;
* an *extra run* is a run after one that did not end the job: every run of a job
  after its first, except a slow-hook job's next attempt after its run failed on
  purpose. Each has a cause: the earlier run's worker was SIGKILLed, or the worker's
  log says that claim was lost while it lived; else it is *unexplained*;
* a run is *cut off* when its worker was SIGKILLed while it held the job, its claim
  was lost (the log says so), or it ran across a Redis restart; a job may end
  ``failed`` (max_attempts=1) or ``lost`` (at-most-once) only after such a run;
* a job *lost unrun* ended failed, lost or missing without a single run, unless
  Redis had recorded its run's start (right before the handler is called) and its
  worker was SIGKILLed after that: that run was cut off before the handler's first
  line, and is reported apart.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from chaos.jobs import KIND_OF_NAME, KINDS, LEDGER_GLOB, token_digest

if TYPE_CHECKING:
    from chaos.run import Run

QUEUE = "chaos"
# The end states each kind may reach. failed/lost are allowed only after a cut-off run.
ALLOWED = {
    "ordinary": {"completed"},
    "at-most-once": {"completed", "lost"},
    "max-attempts-1": {"completed", "failed"},
    "ttl": {"completed", "expired"},
    "slow-hook": {"failed"},
}
TERMINAL = ("completed", "failed", "lost", "expired")
# A kill explains a run's loss only if it came this soon after the run began: a
# completion waits here for milliseconds, for seconds only while Redis is down.
KILL_WINDOW_MS = 30_000
# A run "across a Redis restart": begun before Redis answered again, and still
# running (or its completion on its way) shortly before Redis was killed.
RESTART_BEFORE_MS, RESTART_AFTER_MS = 2_000, 1_000
MAX_HISTORIES = 10
_CLAIM_LOST_WORDS = ("claim lost", "lease lost", "internal error")
_WORKER_LOST = re.compile(r"^(\S+ \S+) WARNING worker (\S+) lost: (\d+) job\(s\) of (\S+) back to pending: (.*)$")


@dataclass
class Exec:
    attempt: int
    digest: str
    tag: str  # the worker process (chaos.run.WorkerProc.tag)
    pid: int
    ms: int
    worker_id: str = "-"
    end_ms: int | None = None
    end: str | None = None  # "ok", "fail", or None: no end recorded (or not recorded for the kind)


class Logs:
    """The workers' logs, read once each: lines about lost claims, and lost workers."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self._claim_lost: dict[str, list[str]] = {}

    def lines(self, tag: str) -> list[str]:
        path = self.paths.get(tag)
        return path.read_text(errors="replace").splitlines() if path and path.exists() else []

    def said_claim_lost(self, tag: str, job_id: str) -> bool:
        if tag not in self._claim_lost:
            self._claim_lost[tag] = [
                line for line in self.lines(tag) if any(word in line for word in _CLAIM_LOST_WORDS)
            ]
        return any(job_id in line for line in self._claim_lost[tag])

    def workers_taken_for_lost(self) -> list[tuple[str, str, str, list[str]]]:
        """(when, by which worker's tag, the worker id taken, the job ids) of every
        'worker ... lost' line."""
        out = []
        for tag in self.paths:
            for line in self.lines(tag):
                m = _WORKER_LOST.match(line)
                if m:
                    out.append((m.group(1), tag, m.group(2), m.group(5).split(", ")))
        return out


def read_records(directory: Path) -> list[list[str]]:
    """Every record of every worker's ledger file (chaos/jobs.py), split into fields."""
    records = []
    for path in sorted(directory.glob(LEDGER_GLOB)):
        records += [line.split() for line in path.read_text(errors="replace").splitlines() if line]
    return records


def read_ledger(directory: Path) -> tuple[dict[str, list[Exec]], dict[str, list[list[str]]], int]:
    """(runs by job id, hook records by job id, records that could not be read)."""
    records = read_records(directory)
    ends: dict[tuple[str, str], tuple[int, str]] = {}
    bad = 0
    for r in records:
        if r[0] == "e" and len(r) == 5:
            ends.setdefault((r[1], r[2]), (int(r[3]), r[4]))
    executions: dict[str, list[Exec]] = defaultdict(list)
    hooks: dict[str, list[list[str]]] = defaultdict(list)
    for r in records:
        if r[0] == "x" and len(r) == 8:
            _x, job_id, attempt, digest, tag, pid, ms, wid = r
            end = ends.get((job_id, digest))
            executions[job_id].append(
                Exec(
                    int(attempt), digest, tag, int(pid), int(ms), wid, end[0] if end else None, end[1] if end else None
                )
            )
        elif r[0] == "h" and len(r) == 6:
            hooks[r[1]].append(r[2:])  # [start|end, tag, thread, ms]
        elif not (r[0] == "e" and len(r) == 5):
            bad += 1
    for recs in executions.values():
        recs.sort(key=lambda r: (r.attempt, r.ms))
    return executions, hooks, bad


def read_jobs(q: Any) -> dict[str, dict[str, str | None]]:
    """Every job hash, acknowledged or not (a call that failed may have written some)."""
    base = f"queue:{QUEUE}:"
    fields = (
        "status",
        "attempts",
        "result",
        "additional_deliveries",
        "name",
        "max_attempts",
        "last_error",
        "started",
        "worker",
        "claimed_at_ms",
    )
    jobs: dict[str, dict[str, str | None]] = {}
    keys = list(q.scan_iter(match=base + "job:*", count=5000))
    for start in range(0, len(keys), 2000):
        pipe = q.pipeline(transaction=False)
        chunk = keys[start : start + 2000]
        for key in chunk:
            pipe.hmget(key, *fields)
        for key, values in zip(chunk, pipe.execute(), strict=True):
            jobs[key[len(base + "job:") :]] = dict(zip(fields, values, strict=True))
    return jobs


def new_kind_figures(jobs: int) -> dict[str, Any]:
    return {
        "jobs": jobs,
        "statuses": Counter(),
        "runs": 0,
        "ran_once": 0,
        "ran_again": 0,
        "extra_runs": Counter(),
        "unexplained_ids": [],
        "lost_unrun": 0,
        "lost_unrun_ids": [],
        "expired_by_runs": Counter(),
        "ended_after_cut_off_run": Counter(),
        "bad_end_ids": [],
        "attempts_without_a_run": 0,
        "ran_twice": 0,
    }


def verify(run: Run, drained: bool) -> dict[str, Any]:
    """Every figure of the report."""
    import redis

    q = redis.Redis(port=run.queue_server.port, decode_responses=True)
    base = f"queue:{QUEUE}:"
    jobs = read_jobs(q)
    executions, hooks, unreadable = read_ledger(run.ledger_dir)
    runs = {job_id: len(recs) for job_id, recs in executions.items()}
    stats = {k: int(v) for k, v in q.hgetall(base + "stats").items()}
    aof = q.config_get("appendfsync").get("appendfsync")
    depth = {
        name: q.llen(base + name) if name != "scheduled" else q.zcard(base + name)
        for name in ("pending", "processing", "claiming", "scheduled")
    }
    logs = Logs({w.tag: w.log_path for w in run.all_workers()})

    def killed_while_held(r: Exec) -> bool:
        at = run.killed.get(r.tag)
        return at is not None and r.ms <= at * 1000 <= r.ms + KILL_WINDOW_MS

    def extra_cause(job_id: str, kind: str, r: Exec) -> str | None:
        """Why a run did not end its job (another run followed, or it ended lost/failed)."""
        if r.end == "ok" or kind == "ordinary":
            # The handler returned (ordinary jobs record no end: it may have), but
            # its outcome never landed. Other kinds with no end recorded stopped
            # inside the handler: only their process's death explains that.
            if logs.said_claim_lost(r.tag, job_id):
                near = any(k * 1000 - 5000 <= r.ms <= b * 1000 + 60_000 for k, b in run.redis_restarts)
                return "claim lost, its worker alive" + (" (around a Redis restart)" if near else "")
        if killed_while_held(r):
            return "its worker SIGKILLed"
        return None

    def across_a_restart(r: Exec) -> bool:
        last = r.end_ms or r.ms
        return any(
            r.ms <= b * 1000 + RESTART_AFTER_MS and last >= k * 1000 - RESTART_BEFORE_MS for k, b in run.redis_restarts
        )

    ledger_ids: dict[str, set[str]] = defaultdict(set)
    for recs in executions.values():
        for r in recs:
            ledger_ids[r.worker_id].add(r.tag)
    tags = run.worker_tags(ledger_ids)

    def killed_after_its_start(h: dict[str, str | None]) -> bool:
        """A job Redis recorded as started by its last claim, whose worker was
        SIGKILLed after that claim: its run began (Redis is told right before
        the handler is called) and was cut off before the handler's first line
        (the ledger's record). Only a started job can end lost or failed by a
        reclaim: one claimed ahead and never started goes back to pending."""
        tag = tags.get(h.get("worker") or "")
        at = run.killed.get(tag) if tag else None
        claimed = int(h.get("claimed_at_ms") or 0)
        return bool(h.get("started")) and at is not None and at * 1000 >= claimed

    kind_of = {job_id: kind for job_id, (_n, kind) in run.acked.items()}
    figures_by_kind = {kind: new_kind_figures(0) for kind in KINDS}
    causes: Counter[str] = Counter()
    delays: dict[str, list[float]] = defaultdict(list)
    wrong_completer, twice_under_one_claim, uncounted = [], [], []
    left_ids: list[str] = []
    ran_twice: dict[str, list[str]] = {"at-most-once": [], "max-attempts-1": []}
    for job_id in run.acked:
        kind = kind_of[job_id]
        k = figures_by_kind[kind]
        k["jobs"] += 1
        h = jobs.get(job_id) or {}
        status = h.get("status") or "missing"
        k["statuses"][status] += 1
        recs = executions.get(job_id, [])
        k["runs"] += len(recs)
        if int(h.get("attempts") or 0) > len(recs):
            k["attempts_without_a_run"] += 1
        if len({r.digest for r in recs}) != len(recs):
            twice_under_one_claim.append(job_id)
        if len(recs) >= 2:
            k["ran_twice"] += 1
            if kind in ("at-most-once", "max-attempts-1"):
                ran_twice[kind].append(job_id)

        # Extra runs and their causes.
        extra = 0
        for r, nxt in zip(recs, recs[1:], strict=False):
            if kind == "slow-hook" and r.end == "fail":
                continue  # its next attempt after failing on purpose: planned
            extra += 1
            cause = extra_cause(job_id, kind, r) or "unexplained"
            if cause == "unexplained":
                k["unexplained_ids"].append(job_id)
            k["extra_runs"][cause] += 1
            causes[cause] += 1
            killed_at = run.killed.get(r.tag)
            since = killed_at * 1000 if cause == "its worker SIGKILLed" and killed_at else r.ms
            delays[cause].append((nxt.ms - since) / 1000)
        if recs:
            k["ran_again" if extra else "ran_once"] += 1

        # How it ended.
        if status not in TERMINAL:
            left_ids.append(job_id)
            if status == "missing" and not recs:
                k["lost_unrun"] += 1
                k["lost_unrun_ids"].append(job_id)
            elif status == "missing":
                k["bad_end_ids"].append(job_id)
            continue
        if status == "expired":
            k["expired_by_runs"][str(min(len(recs), 2)) + ("+" if len(recs) >= 2 else "")] += 1
        elif status in ("failed", "lost") and not recs:
            if kind != "slow-hook" and killed_after_its_start(h):
                k["ended_after_cut_off_run"][f"{status}: SIGKILLed between its start and its handler's first line"] += 1
                continue
            k["lost_unrun"] += 1
            k["lost_unrun_ids"].append(job_id)
            continue
        if status not in ALLOWED[kind]:
            k["bad_end_ids"].append(job_id)
            continue
        if status in ("failed", "lost") and not (kind == "slow-hook" and recs[-1].end == "fail"):
            last = recs[-1]
            cut = extra_cause(job_id, kind, last) or ("across a Redis restart" if across_a_restart(last) else None)
            if cut is None:
                k["bad_end_ids"].append(job_id)
            else:
                k["ended_after_cut_off_run"][f"{status}: {cut}"] += 1
        if status == "completed":
            result = json.loads(h.get("result") or "null") or {}
            completer = (result.get("attempt"), result.get("token"))
            last_claim = (recs[-1].attempt, recs[-1].digest) if recs else None
            if completer != last_claim or completer[0] != int(h.get("attempts") or 0):
                wrong_completer.append(job_id)
            if len(recs) - 1 > int(h.get("additional_deliveries") or 0):
                uncounted.append(job_id)

    # Jobs written by a call that raised: counted apart, by their names.
    extras = [j for j in jobs if j not in run.acked]
    extras_by_kind = Counter(KIND_OF_NAME.get(jobs[j].get("name") or "", "?") for j in extras)

    # Each job ended once: the engine counts every end, so its counters equal the end states.
    ended = Counter(h.get("status") for h in jobs.values())
    counters_off = {s: (stats.get(s, 0), ended.get(s, 0)) for s in TERMINAL if stats.get(s, 0) != ended.get(s, 0)}

    # The slow hooks, and the workers taken for lost (never a live one).
    hook_figures = summarize_hooks(run, jobs, executions, hooks)
    taken = []
    for when, by, wid, ids in logs.workers_taken_for_lost():
        tag = tags.get(wid)
        taken.append(
            {"at": when, "by": by, "worker_id": wid, "tag": tag, "jobs": len(ids), "killed": tag in run.killed}
        )
    live_taken = [t for t in taken if not t["killed"]]

    ns_workers = [w for w in run.all_workers() if w.namespaced]
    ns_tags = {w.tag for w in ns_workers}
    ns_runs = [r for recs in executions.values() for r in recs if r.tag in ns_tags]
    namespaces = {
        "skipped": run.namespaces_skipped,
        "kept": run.namespaces,
        "workers": len(ns_workers),
        "worker_ids": sorted(wid for wid, tag in tags.items() if tag in ns_tags),
        "killed": sum(1 for w in ns_workers if w.tag in run.killed),
        "executions": len(ns_runs),
        "pids_seen": sorted({r.pid for r in ns_runs}),
        "workers_that_ran_jobs": len({r.tag for r in ns_runs}),
    }

    suspects = [
        j for k in figures_by_kind.values() for j in k["lost_unrun_ids"] + k["unexplained_ids"] + k["bad_end_ids"]
    ]
    suspects += (
        ran_twice["at-most-once"]
        + ran_twice["max-attempts-1"]
        + uncounted
        + wrong_completer
        + twice_under_one_claim
        + left_ids
    )
    histories = {
        j: history(run, q, j, kind_of.get(j, "?"), executions.get(j, []), hooks.get(j, []), logs, tags)
        for j in dict.fromkeys(suspects[:MAX_HISTORIES])
    }
    q.close()

    for k in figures_by_kind.values():
        for name in ("unexplained_ids", "lost_unrun_ids", "bad_end_ids"):
            k[name] = sorted(set(k[name]))[:20]
        for name in ("statuses", "extra_runs", "expired_by_runs", "ended_after_cut_off_run"):
            k[name] = dict(k[name])
    totals = figures_by_kind.values()
    return {
        "jobs": run.args.jobs,
        "mix": run.args.mix,
        "workers": run.args.workers,
        "concurrency": run.args.concurrency,
        "seconds": round(time.time() - run.started, 1),
        "drained": drained,
        "appendfsync": aof,
        "worker_kills": len(run.killed),
        "workers_exited_by_themselves": run.exited,
        "redis_restarts": len(run.redis_restarts),
        "redis_downtime_s": [round(b - k, 2) for k, b in run.redis_restarts],
        "acknowledged": len(run.acked),
        "enqueue_retries": run.enqueue_retries,
        "enqueue_error": run.enqueue_error,
        "unacknowledged_written": len(extras),
        "unacknowledged_by_kind": dict(extras_by_kind),
        "unacknowledged_completed": sum(1 for j in extras if jobs[j].get("status") == "completed"),
        "statuses": dict(Counter((jobs.get(j) or {}).get("status") or "missing" for j in run.acked)),
        "kinds": figures_by_kind,
        "lost_unrun": sum(k["lost_unrun"] for k in totals),
        "at_most_once_ran_twice": figures_by_kind["at-most-once"]["ran_twice"],
        "max_attempts_1_ran_twice": figures_by_kind["max-attempts-1"]["ran_twice"],
        "ran_twice_ids": {kind: ids[:20] for kind, ids in ran_twice.items()},
        "bad_ends": sum(len(k["bad_end_ids"]) for k in totals),
        "left": depth,
        "left_ids": left_ids[:20],
        "executions": sum(runs.values()),
        "unreadable_ledger_records": unreadable,
        "jobs_run_more_than_once": sum(1 for n in runs.values() if n > 1),
        "most_runs_of_one_job": max(runs.values(), default=0),
        "extra_executions_by_cause": dict(causes),
        "redelivery_delay_s": {
            cause: {"median": round(median(v), 2), "max": round(max(v), 2)} for cause, v in delays.items()
        },
        "unexplained": sum(len(k["unexplained_ids"]) for k in totals),
        "unexplained_ids": sorted({j for k in totals for j in k["unexplained_ids"]})[:20],
        "completed_by_a_stale_claim": len(wrong_completer),
        "stale_completer_ids": wrong_completer[:20],
        "claims_that_ran_twice": len(twice_under_one_claim),
        "runs_not_counted_as_redeliveries": len(uncounted),
        "uncounted_ids": uncounted[:20],
        "counters_unlike_end_states": counters_off,
        "hooks": hook_figures,
        "workers_taken_for_lost": len(taken),
        "live_workers_taken_for_lost": live_taken,
        "pid_namespaces": namespaces,
        "histories": histories,
        "engine_counters": stats,
    }


def history(
    run: Run, q: Any, job_id: str, kind: str, recs: list[Exec], hook_entries: list[Any], logs: Logs, tags: dict
) -> dict[str, Any]:
    """What is known of one job that failed a check: its hash (tokens as digests),
    its runs, its hooks and every log line that names it; times in seconds since the
    run began."""

    def t(ms: float | None) -> float | None:
        return None if ms is None else round(ms / 1000 - run.started, 3)

    def killed_at(tag: str | None) -> float | None:
        return t(run.killed[tag] * 1000) if tag in run.killed else None

    raw = q.hgetall(f"queue:{QUEUE}:job:{job_id}")
    hash_ = {
        k: (token_digest(v) if k in ("claim_token", "started") and v else v) for k, v in raw.items() if k != "payload"
    }
    for k in ("claimed_at_ms", "lease_until_ms", "failed_at_ms", "finished_at_ms", "expires_at_ms", "created_at_ms"):
        if hash_.get(k, "").isdigit():
            hash_[k] += f" (t={t(int(hash_[k]))})"
    worker = raw.get("worker")
    held_by = tags.get(worker) if worker else None
    return {
        "kind": kind,
        "hash": hash_,
        "held_by": {"worker": worker, "tag": held_by, "killed_at": killed_at(held_by)},
        "runs": [
            {
                "attempt": r.attempt,
                "token": r.digest,
                "tag": r.tag,
                "worker": r.worker_id,
                "at": t(r.ms),
                "end": r.end,
                "end_at": t(r.end_ms),
                "worker_killed_at": killed_at(r.tag),
            }
            for r in recs
        ],
        "hooks": hook_entries,
        "log": [f"{tag}: {line}" for tag in logs.paths for line in logs.lines(tag) if job_id in line][:40],
        "redis_restarts": [(t(k * 1000), t(b * 1000)) for k, b in run.redis_restarts],
    }


def summarize_hooks(
    run: Run, jobs: dict[str, dict[str, str | None]], executions: dict[str, list[Exec]], hooks: dict[str, list[Any]]
) -> dict[str, Any]:
    """The slow on_max_attempts_exhausted hooks: who called them, how long they took,
    and the failed slow-hook jobs whose hook never ran (their caller was killed)."""
    failed = [
        j for j, (_n, kind) in run.acked.items() if kind == "slow-hook" and jobs.get(j, {}).get("status") == "failed"
    ]
    by_thread: Counter[str] = Counter()
    seconds, twice, unfinished, cut_by_kill, never = [], [], 0, 0, []
    for job_id in failed:
        entries = hooks.get(job_id, [])
        starts = [e for e in entries if e[0] == "start"]
        ends = [e for e in entries if e[0] == "end"]
        if len(starts) > 1:
            twice.append(job_id)
        if not starts:
            recs = executions.get(job_id, [])
            never.append({"job": job_id, "last_run_worker_killed": bool(recs) and recs[-1].tag in run.killed})
            continue
        for s in starts:
            by_thread["runner" if s[2].startswith("jobq-runner") else s[2]] += 1
            end = next((e for e in ends if e[1] == s[1] and e[2] == s[2]), None)
            if end is None:
                unfinished += 1
                cut_by_kill += s[1] in run.killed
            else:
                seconds.append((int(end[3]) - int(s[3])) / 1000)
    return {
        "failed_jobs": len(failed),
        "called": sum(by_thread.values()),
        "called_by": dict(by_thread),
        "called_twice": twice[:20],
        "unfinished": unfinished,
        "unfinished_worker_killed": cut_by_kill,
        "longest_s": max(seconds, default=0.0),
        "never_called": never[:20],
        "never_called_count": len(never),
    }
