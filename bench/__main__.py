"""python -m bench: django-jobqueue against RQ, Celery, Dramatiq and Huey on one private Redis.

    python -m bench                  # the full run (15-20 min on 2 cores); writes docs/benchmarks-results.md + .png
    python -m bench --quick          # a ~1-minute smoke run; writes artifacts/bench-quick/
    python -m bench --only jobqueue  # ours alone (needs no peer package)

Runs itself inside .venv/bench (made on first use) unless --no-venv.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from bench import venv
from bench.systems import BY_KEY, SYSTEMS

REPO = venv.REPO


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes and short caps: a smoke run of about a minute")
    p.add_argument(
        "--only",
        default="",
        help=f"comma-separated systems to measure (default: all): {', '.join(s.key for s in SYSTEMS)}",
    )
    p.add_argument("--scale", type=float, default=1.0, help="multiply every job count by this (e.g. 0.2)")
    p.add_argument(
        "--out-dir",
        type=Path,
        help="where to write benchmarks-results.md, benchmarks.png and results.json "
        "(default: docs/ for a full run of every system, artifacts/bench-quick/ otherwise)",
    )
    p.add_argument("--no-venv", action="store_true", help="run in this interpreter instead of .venv/bench")
    p.add_argument("--skip-ceilings", action="store_true", help="skip the ceiling loops and redis-benchmark")
    p.add_argument("--skip-reclaim", action="store_true", help="skip our reclaim sweep measurements")
    p.add_argument(
        "--rounds",
        type=int,
        help="run the one-at-a-time enqueue and the drains this many times each, every system in turn, "
        "and keep each one's best (default: 3 and 2; 1 with --quick)",
    )
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not args.no_venv and not venv.inside():
        venv.reexec(argv)  # does not return

    keys = [k.strip() for k in args.only.split(",") if k.strip()] or [s.key for s in SYSTEMS]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        raise SystemExit(f"unknown system(s): {', '.join(unknown)}; known: {', '.join(BY_KEY)}")
    systems = [BY_KEY[k] for k in keys]
    missing = [s.key for s in systems if importlib.util.find_spec(s.module) is None]
    if missing:
        raise SystemExit(
            f"not installed here: {', '.join(missing)} (run without --no-venv, or pip install -e '.[bench]')"
        )

    from bench import harness, machine, report
    from django_jobqueue.devserver import RedisServer

    plan = (harness.QUICK if args.quick else harness.FULL).scaled(args.scale)
    if args.rounds is not None:
        if args.rounds < 1:
            raise SystemExit("--rounds must be at least 1")
        plan = replace(plan, single_rounds=args.rounds, drain_rounds=args.rounds)
    full_run = not args.quick and args.scale == 1.0 and len(systems) == len(SYSTEMS)
    out_dir = args.out_dir or (REPO / "docs" if full_run else REPO / "artifacts" / "bench-quick")
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    started = time.perf_counter()
    load_start = machine.load_average()
    packages = sorted(
        {"django-jobqueue", "django", "redis", "hiredis", "matplotlib"} | {p for s in systems for p in s.packages}
    )
    # Worker logs and the raw numbers go under artifacts/ (ignored by git); the
    # logs in a folder of this run's own (other runs, such as the test suite's, may
    # be going on at the same time), removed when every system ran cleanly.
    artifacts = REPO / "artifacts" / "bench"
    artifacts.mkdir(parents=True, exist_ok=True)
    logs = Path(tempfile.mkdtemp(prefix="logs-", dir=artifacts))
    with RedisServer() as server:
        log(f"private redis-server on 127.0.0.1:{server.port}; worker logs in {logs.relative_to(REPO)}")
        h = harness.Harness(server, plan, systems, logs, log)
        redis_version = h.r.info("server")["redis_version"]
        h.run()
        reclaim: list[dict] = []
        if "jobqueue" in keys and not args.skip_reclaim:
            log("== our reclaim sweep")
            reclaim = h.reclaim()
        ceilings: dict = {}
        if not args.skip_ceilings:
            log("== ceilings")
            ceilings = h.ceilings(with_engine="jobqueue" in keys)
            log(
                "   "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in {**ceilings["loops"], **ceilings.get("engine", {})}.items())
            )
        h.r.close()

    run = {
        "command": "python -m bench " + shlex.join(argv) if argv else "python -m bench",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.perf_counter() - started,
        "machine": machine.machine(),
        "load_start": load_start,
        "load_end": machine.load_average(),
        "redis_version": redis_version,
        "versions": machine.versions(packages),
        "plan": asdict(plan),
        "reclaim": reclaim,
        "ceilings": ceilings,
        "ping_single": h.ping_single,
    }
    header, rows = report.table(h.results, systems)
    print()
    print(report.text_table(header, rows))
    png = out_dir / "benchmarks.png"
    has_chart = report.chart(png, h.results, systems, reclaim)
    md = report.markdown(run, h.results, systems, png.name if has_chart else None)
    (out_dir / "benchmarks-results.md").write_text(md, encoding="utf-8")
    raw = artifacts / "results.json" if out_dir.resolve() == (REPO / "docs").resolve() else out_dir / "results.json"
    raw.write_text(json.dumps({**run, "results": harness.as_json(h.results)}, indent=1, default=str), encoding="utf-8")
    print(
        f"\nwrote {out_dir / 'benchmarks-results.md'}"
        + (f" and {png}" if has_chart else " (no chart: matplotlib missing)")
    )
    print(f"raw numbers in {raw}")
    print(f"finished in {run['seconds']:.0f} s")
    failed = [s.key for s in systems if h.results[s.key].errors]
    if failed:
        print(f"errors in {', '.join(failed)}: worker logs kept in {logs}")
        return 1
    shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
