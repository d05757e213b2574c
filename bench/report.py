"""The results as a text table, as Markdown and as a PNG chart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ASYNC_SLEEP_S
from bench.harness import (
    ASYNC_CALLERS,
    ASYNC_CONCURRENCY,
    LIMITED_GLOBAL_CONCURRENCY,
    LIMITED_PROCESSES,
    SystemResult,
    percentile,
)
from bench.systems import System


@dataclass(frozen=True)
class Row:
    label: str
    get: Callable[[SystemResult], float | None]
    higher_is_better: bool
    fmt: str  # format spec for the value
    note: Callable[[SystemResult], str] = lambda r: ""


def _drain(p: int, what: str) -> Callable[[SystemResult], float | None]:
    def get(r: SystemResult) -> float | None:
        d = r.drains.get(p)
        if d is None or not d.done:
            return None
        return {"total": d.total_rate, "steady": d.steady_rate, "startup": d.startup_s}[what]

    return get


def _capped(p: int) -> Callable[[SystemResult], str]:
    return lambda r: "†" if r.drains.get(p) and r.drains[p].capped else ""


def _limited(r: SystemResult) -> float | None:
    d = r.limited_drain
    return d.steady_rate if d is not None and d.done else None


def limit_cost_us(r: SystemResult) -> float | None:
    """What the global concurrency limit adds to each job, in µs: the limited
    drain's time per job less the unlimited one's (steady rates)."""
    limited, unlimited = _limited(r), _drain(LIMITED_PROCESSES, "steady")(r)
    if not limited or not unlimited:
        return None
    return (1 / limited - 1 / unlimited) * 1e6


def _limited_note(r: SystemResult) -> str:
    capped = "†" if r.limited_drain and r.limited_drain.capped else ""
    cost = limit_cost_us(r)
    return capped + ("" if cost is None else f" ({cost:+.1f} µs/job)")


def _async_drain_note(r: SystemResult) -> str:
    d = r.async_drain
    if d is None or d.ratio is None:
        return ""
    return f" (ideal {d.ideal_s:.2f} s, {d.ratio:.2f}× it)"


def _best_enqueue(what: str) -> Callable[[SystemResult], float | None]:
    def get(r: SystemResult) -> float | None:
        rates = [getattr(run, what) for run in r.async_enqueue_runs]
        return max((v for v in rates if v), default=None)

    return get


def _aenqueue_note(r: SystemResult) -> str:
    mine, threads = _best_enqueue("aenqueue_rate")(r), _best_enqueue("threads_rate")(r)
    if not mine or not threads:
        return ""
    return f" ({mine / threads:.2f}× {ASYNC_CALLERS} threads)"


def _lat(p: float) -> Callable[[SystemResult], float | None]:
    return lambda r: percentile(r.latency_ms, p) if r.latency_ms else None


# Ours alone, next to our unlimited 2-process drain: what a global concurrency limit costs.
LIMITED_ROW = Row(
    f"Drain, {LIMITED_PROCESSES} worker processes, global concurrency {LIMITED_GLOBAL_CONCURRENCY}, steady (jobs/s)",
    _limited,
    True,
    ",.0f",
    _limited_note,
)
# Ours alone: async handlers drained by one worker process, against the ideal
# (every handler's sleep, ASYNC_CONCURRENCY at once).
ASYNC_DRAIN_ROW = Row(
    f"Async handlers (asyncio.sleep({ASYNC_SLEEP_S:g}) each), 1 worker process, "
    f"--async-concurrency {ASYNC_CONCURRENCY}, first start to last completion (s)",
    lambda r: r.async_drain.drain_s if r.async_drain is not None and r.async_drain.ratio is not None else None,
    False,
    ".2f",
    _async_drain_note,
)
# Ours alone: one call per job from ASYNC_CALLERS concurrent callers, tasks on one loop against threads.
AENQUEUE_ROW = Row(
    f"aenqueue, {ASYNC_CALLERS} tasks on one event loop (jobs/s)",
    _best_enqueue("aenqueue_rate"),
    True,
    ",.0f",
    _aenqueue_note,
)
THREADS_ENQUEUE_ROW = Row(f"enqueue, {ASYNC_CALLERS} threads (jobs/s)", _best_enqueue("threads_rate"), True, ",.0f")
ROWS = [
    Row("Enqueue, one call at a time (jobs/s)", lambda r: r.enqueue_single, True, ",.0f"),
    Row("Enqueue, bulk API (jobs/s)", lambda r: max(r.enqueue_bulk) if r.enqueue_bulk else None, True, ",.0f"),
    Row("Drain, 1 worker process, from its start (jobs/s)", _drain(1, "total"), True, ",.0f", _capped(1)),
    Row("Drain, 1 worker process, steady (jobs/s)", _drain(1, "steady"), True, ",.0f", _capped(1)),
    Row("Drain, 2 worker processes, from their start (jobs/s)", _drain(2, "total"), True, ",.0f", _capped(2)),
    Row("Drain, 2 worker processes, steady (jobs/s)", _drain(2, "steady"), True, ",.0f", _capped(2)),
    LIMITED_ROW,
    Row("Worker start to first job done (s)", _drain(1, "startup"), False, ".2f"),
    Row("Enqueue-to-start latency p50, idle worker (ms)", _lat(50), False, ".2f"),
    Row("Enqueue-to-start latency p99, idle worker (ms)", _lat(99), False, ".2f"),
    Row("Redis memory per pending job (bytes)", lambda r: r.mem_per_job, False, ",.0f"),
    Row(
        "Redis commands per job, incl. inside scripts",
        lambda r: r.commands.get("commands_per_job"),
        False,
        ".1f",
        lambda r: "‡" if r.commands.get("capped") else "",
    ),
    Row(
        "Client round trips per job (at most)",
        lambda r: r.commands.get("round_trips_per_job"),
        False,
        ".1f",
        lambda r: "‡" if r.commands.get("capped") else "",
    ),
    # Ours alone (after the rows the chart draws, by index).
    ASYNC_DRAIN_ROW,
    AENQUEUE_ROW,
    THREADS_ENQUEUE_ROW,
]


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(results: dict[str, SystemResult], systems: list[System]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one column per system, then ours against the best peer."""
    ours = "jobqueue"
    peers = [s for s in systems if s.key != ours]
    header = ["Measure", *[s.label for s in systems]]
    if ours in results and peers:
        header.append("ours vs best peer")
    rows = []
    for row in ROWS:
        cells = [row.label]
        for s in systems:
            r = results[s.key]
            cells.append(_fmt(row.get(r), row.fmt) + row.note(r))
        if ours in results and peers:
            mine = row.get(results[ours])
            theirs = [(row.get(results[s.key]), s.label) for s in peers]
            theirs = [(v, label) for v, label in theirs if v is not None and v > 0]
            if mine is None or mine <= 0 or not theirs:
                cells.append("—")
            else:
                best, label = max(theirs) if row.higher_is_better else min(theirs)
                factor = mine / best if row.higher_is_better else best / mine
                cells.append(f"{factor:.2f}× ({label})")
        rows.append(cells)
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
    return "\n".join(lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown(run: dict[str, Any], results: dict[str, SystemResult], systems: list[System], chart: str | None) -> str:
    header, rows = table(results, systems)
    m, plan = run["machine"], run["plan"]
    parts = [
        "# Benchmark results",
        "",
        f"Generated by `{run['command']}` on {run['date']} in {run['seconds']:.0f} s. "
        "How to rerun and what each row means: [benchmarks.md](benchmarks.md).",
        "",
        f"- **Machine:** {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, {m['os']}; "
        f"load average {run['load_start']} at the start, {run['load_end']} at the end "
        "(other work was running: compare ratios within one run, not absolute numbers across runs).",
        f"- **Python** {m['python']}, **Redis** {run['redis_version']} (private server, no persistence).",
        "- **Packages:** " + ", ".join(f"{k} {v}" for k, v in run["versions"].items()) + ".",
        f"- **Sizes:** {plan['single_n']:,} jobs enqueued one at a time; {plan['drain_n']:,} per bulk enqueue "
        f"and per drain (time cap {plan['drain_cap_s']:.0f} s); up to {plan['latency_samples']} latency samples "
        f"(time cap {plan['latency_cap_s']:.0f} s); {plan['commands_n']:,} jobs for the command counts.",
        "",
        "## Side by side",
        "",
        "Same no-op job everywhere (one Redis INCR). Last column: our value against the best peer's in that row, "
        "as a factor where above 1 means we do better (faster, or less), with that peer named.",
        "",
        md_table(header, rows),
        "",
        "— not measured (no bulk API), or not applicable. † the drain hit its time cap: the rate is over the jobs "
        "that ran. ‡ the command count hit the time cap: commands of every enqueue and of the jobs that ran, "
        "over the jobs that ran (an overestimate). Enqueue one at a time: best of "
        f"{plan.get('single_rounds', 1)} run(s); drains: best of {plan.get('drain_rounds', 1)} (steady rate), every "
        "system once per round (every run is listed below); bulk enqueue: best of the bulk enqueues the drains "
        f"did. Latency p99 is of at most {plan['latency_samples']} samples.",
        "",
        *_limit_note(plan, results),
        *_async_note(plan, results),
        *_floor(run, results),
        "Latency samples taken: "
        + ", ".join(f"{s.label} {len(results[s.key].latency_ms)}" for s in systems)
        + ". Jobs counted for commands: "
        + ", ".join(f"{s.label} {results[s.key].commands.get('done', 0)}" for s in systems)
        + ".",
        "",
        "### How each worker ran",
        "",
    ]
    for s in systems:
        bulk = s.bulk or "none (the drain's jobs are enqueued one at a time, untimed)"
        idle = "blocks on Redis when idle" if s.blocking else "polls Redis when idle (backs off up to 1 s)"
        parts.append(f"- **{s.label}**: {s.concurrency}; {idle}. Bulk enqueue: {bulk}.")
    parts += _runs(results, systems)
    errors = [(s.label, e) for s in systems for e in results[s.key].errors]
    if errors:
        parts += ["", "### Errors", ""] + [f"- {label}: {e}" for label, e in errors]
    if run.get("reclaim"):
        parts += [
            "",
            "## Our reclaim sweep",
            "",
            "`RedisJobQueue.sweep()` (promote + reclaim + expire, one pipelined round trip) with N jobs claimed, "
            "10 of them past their lease; median of "
            f"{plan['reclaim_repeats']} sweeps. *Oldest*: the 10 due jobs are the oldest claims (the tail of the "
            "processing list); *newest*: they are the newest (its head).",
            "",
            "| jobs in flight | 10 due, oldest (ms) | 10 due, newest (ms) | none due (ms) | Redis used_memory (MiB) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for row in run["reclaim"]:
            parts.append(
                f"| {row['in_flight']:,} | {row['oldest_ms']:.2f} | {row['newest_ms']:.2f} | {row['none_ms']:.2f} "
                f"| {row['used_memory'] / 2**20:.1f} |"
            )
    ceilings = run.get("ceilings") or {}
    if ceilings:
        parts += [
            "",
            "## Ceilings",
            "",
            "One call at a time on one connection, from Python (redis-py with hiredis), in the harness process.",
            "",
            "| loop | calls/s |",
            "|---|---:|",
        ]
        names = {
            "ping": "redis-py PING",
            "evalsha": "redis-py EVALSHA of a one-INCR script",
            "enqueue_encoded": "our engine: RedisJobQueue.enqueue_encoded() (no Django layer)",
            "claim_nowait+complete": "our engine: claim_nowait() + complete(), one thread (no worker)",
        }
        for group in ("loops", "engine"):
            for k, v in (ceilings.get(group) or {}).items():
                parts.append(f"| {names.get(k, k)} | {v:,.0f} |")
        rb = ceilings.get("redis_benchmark") or []
        if rb:
            parts += [
                "",
                "`redis-benchmark` for the commands our scripts use (`-c` clients, each waiting for its reply):",
                "",
                "| command | clients | requests/s | p50 (ms) |",
                "|---|---:|---:|---:|",
            ]
            for b in rb:
                parts.append(
                    f"| {b['command']} | {b['clients']} | {_fmt(b['rps'], ',.0f')} | {_fmt(b['p50_ms'], '.3f')} |"
                )
        else:
            parts += ["", "redis-benchmark was not on PATH: skipped."]
    ours = results.get("jobqueue")
    if ours and ours.commands:
        c = ours.commands
        parts += [
            "",
            "## Where our commands go, per job",
            "",
            f"{c['round_trips_per_job']:.2f} round trips and {c['commands_per_job']:.1f} commands per job "
            f"(enqueue() + claim + run + complete, plus the worker's own start-up, heartbeat and sweeps, over "
            f"{c['done']} jobs). The job's own INCR is one of each.",
            "",
            "| sent by clients | per job | | run inside scripts | per job |",
            "|---|---:|---|---|---:|",
        ]
        sent = list(c["client_by_command"].items())
        inside = list(c["in_scripts_by_command"].items())
        for i in range(max(len(sent), len(inside))):
            a_name, a_n = sent[i] if i < len(sent) else ("", None)
            b_name, b_n = inside[i] if i < len(inside) else ("", None)
            a_cell = "" if a_n is None else f"{a_n:.2f}"
            b_cell = "" if b_n is None else f"{b_n:.2f}"
            parts.append(f"| {a_name} | {a_cell} | | {b_name} | {b_cell} |")
    if chart:
        parts += ["", f"![benchmark chart]({chart})"]
    return "\n".join(parts) + "\n"


def _limit_note(plan: dict[str, Any], results: dict[str, SystemResult]) -> list[str]:
    """What the global concurrency row measures (ours alone)."""
    ours = results.get("jobqueue")
    if ours is None or not ours.limited_drain_runs:
        return []
    runs = ", ".join(_fmt(d.steady_rate, ",.0f") for d in ours.limited_drain_runs)
    return [
        f"Global concurrency row, ours alone: the same drain of {plan['drain_n']:,} jobs by {LIMITED_PROCESSES} "
        f"worker processes, on the queue with `GLOBAL_CONCURRENCY = {LIMITED_GLOBAL_CONCURRENCY}`, above what both "
        "hold at once (their runners' jobs and those claimed ahead), so the limit never holds a job back: the "
        "difference is what a limited queue costs per job (the slots counted on each claim, a mark on each claimed "
        "job, a wake token on each completion batch). In brackets: that cost against the unlimited drain above it, "
        "(1/limited − 1/unlimited) × 10⁶ µs of steady rates, each the best of its rounds "
        f"(limited: {runs} jobs/s); on a shared machine tens of µs either way are noise.",
        "",
    ]


def _async_note(plan: dict[str, Any], results: dict[str, SystemResult]) -> list[str]:
    """What the async rows measure (ours alone)."""
    ours = results.get("jobqueue")
    if ours is None or not (ours.async_drain_runs or ours.async_enqueue_runs):
        return []
    drains = ", ".join(
        f"{_fmt(d.drain_s, '.2f')} s" + (f" ({d.total_s:.2f} s from the worker's start)" if d.done else "")
        for d in ours.async_drain_runs
    )
    enqueues = ", ".join(
        f"{_fmt(e.aenqueue_rate, ',.0f')} against {_fmt(e.threads_rate, ',.0f')}" for e in ours.async_enqueue_runs
    )
    return [
        f"Async rows, ours alone. *Async handlers*: {plan['async_drain_n']:,} jobs whose `async def` handler "
        f"only awaits `asyncio.sleep({ASYNC_SLEEP_S:g})`, enqueued in bulk, then drained by one `jobq_worker "
        f"--burst --async-concurrency {ASYNC_CONCURRENCY}` process (the handlers run on the worker's event "
        f"loop, at most {ASYNC_CONCURRENCY} at once, handed over by its runner threads), timed from the first "
        "handler's start to the poll (every 5 ms) that finds the last completion counted in the queue's "
        f"stats; the worker's start-up is left out. Ideal: {ASYNC_SLEEP_S:g} s × jobs / async concurrency, "
        "as if claiming, handing over and completing cost nothing; in brackets the time over it. The row is "
        f"the best round; each: {drains}. *aenqueue / enqueue, {ASYNC_CALLERS} callers*: "
        f"{plan['async_enqueue_n']:,} jobs sent one per call by {ASYNC_CALLERS} concurrent callers, `await "
        f"aenqueue()` from {ASYNC_CALLERS} tasks gathered on one event loop, then `enqueue()` from "
        f"{ASYNC_CALLERS} threads, each in a process of its own (after one untimed call per caller, which "
        "opens its connection); in brackets aenqueue's best over the threads' best. Each round (jobs/s, "
        f"aenqueue against threads): {enqueues}.",
        "",
    ]


def _floor(run: dict[str, Any], results: dict[str, SystemResult]) -> list[str]:
    """Our one-at-a-time enqueue against the PING loop run beside it."""
    pings = run.get("ping_single") or []
    ours = results.get("jobqueue")
    if not pings or ours is None or not ours.enqueue_single:
        return []
    best = max(pings)
    return [
        f"The floor for one call at a time: a redis-py PING loop in a child process of its own, run in each round "
        f"of the one-at-a-time enqueues ({', '.join(f'{p:,.0f}' for p in pings)} calls/s): best {best:,.0f}/s. "
        f"Our best one-at-a-time enqueue is {ours.enqueue_single / best:.0%} of it.",
        "",
    ]


def _runs(results: dict[str, SystemResult], systems: list[System]) -> list[str]:
    """Every run of the phases that ran in rounds, so the spread is in view."""
    if not any(len(results[s.key].enqueue_single_runs) > 1 or
               any(len(v) > 1 for v in results[s.key].drain_runs.values()) for s in systems):  # fmt: skip
        return []

    def runs(values: list[float | None]) -> str:
        return ", ".join(_fmt(v, ",.0f") for v in values) or "—"

    out = [
        "",
        "### Every run",
        "",
        "Jobs/s of each round, in the order run (steady rate for the drains); the tables above use the best.",
        "",
        "| system | enqueue, one at a time | drain, 1 process | drain, 2 processes |",
        "|---|---|---|---|",
    ]
    for s in systems:
        r = results[s.key]
        out.append(
            f"| {s.label} | {runs(list(r.enqueue_single_runs))} "
            f"| {runs([d.steady_rate for d in r.drain_runs.get(1, [])])} "
            f"| {runs([d.steady_rate for d in r.drain_runs.get(2, [])])} |"
        )
    return out


def chart(path: Path, results: dict[str, SystemResult], systems: list[System], reclaim: list[dict[str, Any]]) -> bool:
    """Write the PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [s.label for s in systems]
    colors = ["#2a7ab0" if s.key == "jobqueue" else "#9aa5b1" for s in systems]

    def values(row: Row) -> list[float]:
        return [row.get(results[s.key]) or 0.0 for s in systems]

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    panels = [
        ("Enqueue (jobs/s, higher is better)", [ROWS[0], ROWS[1]], ["one at a time", "bulk"]),
        ("Drain, steady (jobs/s, higher is better)", [ROWS[3], ROWS[5]], ["1 process", "2 processes"]),
        ("Enqueue-to-start latency (ms, log, lower is better)", [ROWS[8], ROWS[9]], ["p50", "p99"]),
        ("Redis memory per pending job (bytes)", [ROWS[10]], ["bytes"]),
        ("Per job: Redis commands and round trips", [ROWS[11], ROWS[12]], ["commands", "round trips"]),
    ]
    x = list(range(len(systems)))
    for ax, (title, rows, names) in zip(axes.flat, panels, strict=False):
        width = 0.8 / len(rows)
        for i, (row, name) in enumerate(zip(rows, names, strict=True)):
            offs = [xi + (i - (len(rows) - 1) / 2) * width for xi in x]
            bars = ax.bar(offs, values(row), width, label=name, color=colors, alpha=1.0 if i == 0 else 0.6,
                          edgecolor="black", linewidth=0.4, hatch=None if i == 0 else "//")  # fmt: skip
            ax.bar_label(bars, labels=[_fmt(v or None, row.fmt) for v in values(row)], fontsize=6, rotation=90,
                         padding=2)  # fmt: skip
        if "latency" in title:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.margins(y=0.25)
        if len(rows) > 1:
            ax.legend(fontsize=7)
    ax = axes.flat[5]
    if reclaim:
        sizes = [r["in_flight"] for r in reclaim]
        for key, name in (("oldest_ms", "10 due, oldest"), ("newest_ms", "10 due, newest"), ("none_ms", "none due")):
            ax.plot(sizes, [r[key] for r in reclaim], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("jobs in flight")
        ax.set_title("Our reclaim sweep (ms, lower is better)", fontsize=10)
        ax.legend(fontsize=7)
    else:
        ax.axis("off")
    fig.suptitle("django-jobqueue and its peers on one Redis (same no-op job)", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
