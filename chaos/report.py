"""The chaos run's report: the figures of chaos/verify.py printed, and the checks
that failed (the run exits 1 if any did)."""

from __future__ import annotations

import json
from typing import Any


def _kind_line(kind: str, k: dict[str, Any]) -> str:
    st = k["statuses"]
    extra = k["extra_runs"]
    again = f"{k['ran_again']}"
    if extra:
        again += " (" + ", ".join(f"{n} {c}" for c, n in sorted(extra.items())) + ")"
    if k["expired_by_runs"] or kind == "ttl":
        e = k["expired_by_runs"]
        expired = f"{st.get('expired', 0)} ({e.get('0', 0)}/{e.get('1', 0)}/{e.get('2+', 0)})"
    else:
        expired = "-"
    cut = ", ".join(f"{n} {c}" for c, n in sorted(k["ended_after_cut_off_run"].items())) or "0"
    ended = st.get("failed", 0) if kind == "slow-hook" else st.get("completed", 0)
    return (
        f"           {kind:<15}{k['jobs']:>7}{ended:>10}{k['ran_once']:>9}  {again:<12}{k['lost_unrun']:>6}"
        f"  {expired:<15} {cut}"
    )


def report(f: dict[str, Any]) -> list[str]:
    """Print the figures; return the failed checks."""
    print()
    print(
        f"chaos: {f['jobs']} jobs, {f['workers']} workers x {f['concurrency']} threads, "
        f"{f['worker_kills']} worker SIGKILLs, {f['redis_restarts']} Redis SIGKILL+restarts "
        f"(appendfsync {f['appendfsync']}, down {f['redis_downtime_s']} s), {f['seconds']} s"
    )
    print(f"mix:       {', '.join(f'{k} {w:g}' for k, w in f['mix'].items())}")
    ns = f["pid_namespaces"]
    if ns["skipped"]:
        print(f"pid ns:    skipped: {ns['skipped']}")
    else:
        print(
            f"pid ns:    {ns['kept']} workers at a time in PID namespaces of their own ({ns['workers']} in all, "
            f"{ns['killed']} SIGKILLed), pids seen {ns['pids_seen']}; {ns['executions']} runs by "
            f"{ns['workers_that_ran_jobs']} of them"
        )
    print(
        f"enqueue:   {f['acknowledged']} acknowledged; {f['enqueue_retries']} call(s) retried; "
        f"{f['unacknowledged_written']} unacknowledged but written (each whole; "
        f"{f['unacknowledged_completed']} of them completed too)"
    )
    print(
        "per kind:  kind              jobs completed ran once  ran again   lost   expired        failed|lost after\n"
        "                                   (failed)            (cause)    unrun  (0/1/2+ runs)  a cut-off run"
    )
    for kind, k in f["kinds"].items():
        if k["jobs"]:
            print(_kind_line(kind, k))
    print(
        f"runs:      {f['executions']} executions; {f['jobs_run_more_than_once']} jobs ran more than once "
        f"(at most {f['most_runs_of_one_job']} times; slow-hook jobs run each attempt)"
    )
    for cause, n in sorted(f["extra_executions_by_cause"].items()):
        d = f["redelivery_delay_s"][cause]
        print(f"           {n} extra run(s): {cause}; run again {d['median']} s later (median), {d['max']} s max")
    h = f["hooks"]
    if h["failed_jobs"]:
        print(
            f"hooks:     {h['called']} slow hooks for {h['failed_jobs']} failed slow-hook jobs (by {h['called_by']}), "
            f"longest {h['longest_s']} s; {len(h['called_twice'])} called twice; {h['unfinished']} unfinished "
            f"({h['unfinished_worker_killed']} of them as their worker was SIGKILLed); "
            f"{h['never_called_count']} never called"
        )
    print(
        f"workers:   {f['workers_taken_for_lost']} taken for lost, {len(f['live_workers_taken_for_lost'])} of them "
        f"alive; {len(f['workers_exited_by_themselves'])} exited by themselves"
    )
    print(
        f"safety:    {f['completed_by_a_stale_claim']} completed by a claim that was not the last; "
        f"{f['claims_that_ran_twice']} claims ran twice; "
        f"{f['runs_not_counted_as_redeliveries']} extra runs not counted as redeliveries; "
        f"counters unlike end states: {f['counters_unlike_end_states'] or 'none'}"
    )
    if h["never_called_count"]:
        print(f"note:      slow-hook jobs failed whose hook never ran: {h['never_called']}")
    print(f"left:      {f['left']}")
    for job_id, h in f["histories"].items():
        print(f"history of {job_id}: {json.dumps(h, sort_keys=True)}")
    print(f"counters:  {json.dumps(f['engine_counters'], sort_keys=True)}")
    failed = []
    if f["enqueue_error"]:
        failed.append(f"enqueuer crashed: {f['enqueue_error']}")
    if f["acknowledged"] != f["jobs"]:
        failed.append(f"only {f['acknowledged']} of {f['jobs']} jobs were enqueued")
    if not f["drained"]:
        failed.append("the queue did not drain within --seconds")
    for kind, k in f["kinds"].items():
        if k["lost_unrun"]:
            failed.append(f"{k['lost_unrun']} {kind} job(s) lost unrun: {k['lost_unrun_ids']}")
        if k["unexplained_ids"]:
            failed.append(f"{kind} job(s) ran again unexplained: {k['unexplained_ids']}")
        if k["bad_end_ids"]:
            failed.append(
                f"{kind} job(s) ended as the kind must not, or lost with no fault to cut their run off: "
                f"{k['bad_end_ids']}"
            )
    if f["at_most_once_ran_twice"]:
        failed.append(
            f"{f['at_most_once_ran_twice']} at-most-once job(s) ran twice: {f['ran_twice_ids']['at-most-once']}"
        )
    if f["max_attempts_1_ran_twice"]:
        failed.append(
            f"{f['max_attempts_1_ran_twice']} max_attempts=1 job(s) ran twice: {f['ran_twice_ids']['max-attempts-1']}"
        )
    if any(f["left"].values()) or f["left_ids"]:
        failed.append(f"jobs left in the queue: {f['left']} {f['left_ids']}")
    if f["completed_by_a_stale_claim"]:
        failed.append(f"completed by a stale claim: {f['stale_completer_ids']}")
    if f["claims_that_ran_twice"] or f["runs_not_counted_as_redeliveries"]:
        failed.append(
            f"a job ran twice without a redelivery the engine counted: {f['claims_that_ran_twice']} claim(s) "
            f"ran twice, {f['runs_not_counted_as_redeliveries']} extra run(s) not counted: {f['uncounted_ids']}"
        )
    if f["counters_unlike_end_states"]:
        failed.append(f"the engine's counters are not the jobs' end states: {f['counters_unlike_end_states']}")
    if f["live_workers_taken_for_lost"]:
        failed.append(f"live workers taken for lost: {f['live_workers_taken_for_lost']}")
    if f["workers_exited_by_themselves"]:
        failed.append(f"workers exited by themselves: {f['workers_exited_by_themselves']}")
    ns = f["pid_namespaces"]
    if not ns["skipped"] and ns["kept"] and ns["workers_that_ran_jobs"] < min(2, ns["kept"]):
        failed.append("the workers in PID namespaces did not both run jobs")
    summary = (
        f"{f['lost_unrun']} lost unrun, {f['at_most_once_ran_twice']} at-most-once ran twice, "
        f"{f['unexplained']} unexplained extra runs, {sum(f['left'].values()) + len(f['left_ids'])} left"
    )
    print("RESULT:    " + ("FAIL: " + "; ".join(failed) if failed else f"PASS: nothing lost ({summary})"))
    return failed
