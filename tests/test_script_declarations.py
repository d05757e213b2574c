"""Each Lua script declares its KEYS and ARGV once, in its header, and Python
builds every call from that declaration by name (engine/declarations.py
explains the grammar). These tests hold the scripts' code, the grammar and every call the
package sends to the declarations."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import redis

from django_jobqueue.engine import declarations, samples, scripts
from django_jobqueue.engine.bulk import purge
from django_jobqueue.engine.declarations import ScriptDeclarationError, parse_declaration
from django_jobqueue.engine.keys import GlobalKeys, QueueKeys
from django_jobqueue.engine.limits import Rate, set_limits
from django_jobqueue.engine.replies import ClaimedJob
from django_jobqueue.engine.schedules import Schedule, ScheduleStore
from django_jobqueue.queue import RedisJobQueue
from django_jobqueue.worker.presence import Presence
from tests.helpers.redis_data import KEY_TYPES

LUA = Path(scripts.__file__).parent / "lua"
SCRIPTS = sorted(path.stem for path in LUA.glob("[a-z]*.lua"))
LIBRARIES = sorted(path.stem for path in LUA.glob("_*.lua"))


@pytest.fixture
def q(r, clock):
    return RedisJobQueue(r, "jobs", visibility_ms=5000, clock=clock)


# ------------------------------------------------- the scripts' own code


def lua_code(text: str) -> str:
    """Lua text without its comments (strings kept: a '--' in one is code)."""
    comment_or_string = re.compile(r"""('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")|--\[(=*)\[.*?\]\2\]|--[^\n]*""", re.S)
    return comment_or_string.sub(lambda m: m.group(1) or "", text)


@dataclass
class Uses:
    """How a piece of Lua code reads KEYS and ARGV."""

    keys: set[int]
    argv: set[int]
    # KEYS or ARGV read other than at a literal number: ARGV[i], #ARGV, unpack(ARGV)
    keys_by_expression: bool
    argv_by_expression: bool

    @classmethod
    def of(cls, code: str) -> Uses:
        def numbers(kind: str) -> set[int]:
            return {int(n) for n in re.findall(rf"\b{kind}\[(\d+)\]", code)}

        def by_expression(kind: str) -> bool:
            return re.search(rf"\b{kind}\b(?!\[\d+\])", code) is not None

        return cls(numbers("KEYS"), numbers("ARGV"), by_expression("KEYS"), by_expression("ARGV"))


def uses_of(name: str) -> Uses:
    """What a script's code reads, the libraries it includes pasted in."""
    return Uses.of(lua_code(scripts.get(name).source))


def scripts_sharing_keys_with(name: str) -> list[str]:
    owner = declarations.declaration(name).keys_as or name
    return [other for other in SCRIPTS if (declarations.declaration(other).keys_as or other) == owner]


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_opens_with_a_header_the_loader_reads(name):
    spec = scripts.get(name).spec

    assert spec.name == name
    assert spec.keys, "every script touches at least one key, so declares it"
    assert spec.argv or spec.tail


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_reads_exactly_the_keys_and_arguments_it_declares(name):
    spec = scripts.get(name).spec
    uses = uses_of(name)

    assert not uses.keys_by_expression, "KEYS are read by number only"
    assert uses.keys <= set(range(1, len(spec.keys) + 1)), "a key read is declared"
    # A layout shared with another script (KEYS: as claim.lua) may hold keys
    # only the other one reads: one list of keys serves both.
    read_by_any = set().union(*(uses_of(other).keys for other in scripts_sharing_keys_with(name)))
    assert read_by_any == set(range(1, len(spec.keys) + 1)), "every declared key is read"

    assert uses.argv == set(range(1, len(spec.argv) + 1)), "every fixed argument is read, and no other by number"
    assert uses.argv_by_expression == (spec.tail is not None), "a variable tail is read, and only if declared"


@pytest.mark.parametrize("name", [s for s in SCRIPTS if "check_types(" in (LUA / f"{s}.lua").read_text("utf-8")])
def test_the_types_a_script_checks_its_keys_for_are_those_their_names_hold(name):
    spec = scripts.get(name).spec
    code = lua_code((LUA / f"{name}.lua").read_text("utf-8"))
    checks = re.findall(r"check_types\(\{(.*?)\}\)", code, re.DOTALL)
    checked = [pair for check in checks for pair in re.findall(r"\bKEYS\[(\d+)\],\s*'(\w+)'", check)]

    named = {spec.keys[int(n) - 1]: kind for n, kind in checked}
    assert named and named == {key: KEY_TYPES[key] for key in named}


@pytest.mark.parametrize("name", LIBRARIES)
def test_a_library_declares_nothing_and_names_the_script_whose_keys_its_code_reads(name):
    spec = declarations.declaration(name)
    uses = Uses.of(lua_code((LUA / f"{name}.lua").read_text("utf-8")))

    assert (spec.keys, spec.argv, spec.tail) == ((), (), None)
    assert not uses.argv and not uses.argv_by_expression, "a library takes values as parameters"
    assert bool(uses.keys) == (spec.keys_as is not None)
    if spec.keys_as is not None:
        assert uses.keys <= set(range(1, len(declarations.declaration(spec.keys_as).keys) + 1))
        includers = [s for s in SCRIPTS if f"--@include {name}\n" in (LUA / f"{s}.lua").read_text("utf-8")]
        assert includers and all(scripts.get(s).spec.keys == scripts.get(spec.keys_as).spec.keys for s in includers)


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_key_is_read_from_one_keys_object_unless_the_call_gives_it(name):
    spec = scripts.get(name).spec
    held = [key for key in spec.keys if key not in spec.given_keys]

    # Given at each call: a job's hash, a worker's hash, the list purge empties.
    assert set(spec.given_keys) <= {"job", "worker", "purged", "schedule", "schedule_runs"}
    assert all(hasattr(QueueKeys, key) for key in held) or all(hasattr(GlobalKeys, key) for key in held)


# ------------------------------------------------------------ the grammar


def header(*lines: str) -> str:
    return "--[[\n  A script.\n\n" + "".join(f"  {line}\n" for line in lines) + "]]\nreturn 1\n"


def test_the_grammar_names_keys_and_arguments_several_to_a_line_with_notes():
    spec = parse_declaration(
        "example",
        header(
            "KEYS[1] pending   KEYS[2] job_prefix (a job's hash is job_prefix .. id)",
            "KEYS[3] job: the job's hash",
            "ARGV[1] now ms (0 = server clock)  ARGV[2] id",
            "ARGV[3] count? how many, as KEYS[1] says in prose (absent: one)",
        ),
    )

    assert spec.keys == ("pending", "job_prefix", "job")
    assert spec.given_keys == ("job",)
    assert (spec.argv, spec.required_argv, spec.tail) == (("now", "id", "count"), 2, None)


def test_a_tail_of_groups_reads_back_by_name():
    spec = parse_declaration("example", header("KEYS[1] stats", "ARGV[1] now  ARGV[2..] jobs {id, token}, per job"))

    assert spec.tail == declarations.ArgvTail("jobs", 2, ("id", "token"))
    assert spec.named_argv([0, "a", "t1", "b", "t2"]) == {
        "now": 0,
        "jobs": [{"id": "a", "token": "t1"}, {"id": "b", "token": "t2"}],
    }
    with pytest.raises(ValueError, match="groups of 2"):
        spec.named_argv([0, "a"])


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        (["KEYS[1] pending  KEYS[3] stats"], "numbered 1..n without gaps"),
        (["KEYS[1] pending", "KEYS[1] stats"], "declared twice"),
        (["KEYS[1] pending  KEYS[2] pending"], "more than once"),
        (["KEYS[1] job-hash prefix"], "'job-hash' is not a name"),
        (["KEYS[1] Pending"], "'Pending' is not a name"),
        (["KEYS[1] pending", "ARGV[1] from"], "'from' is not a name"),
        (["KEYS[1] pending KEYS[2] stats  KEYS[3] events"], "numbered 1..n without gaps"),  # one space: prose
        (["KEYS[1] pending", "ARGV[1] a?  ARGV[2] b"], "only the last ARGV may be optional"),
        (["KEYS[1] pending", "ARGV[1] a?  ARGV[2..] rest"], "no optional ARGV"),
        (["KEYS[1] pending", "ARGV[1] a  ARGV[3..] rest"], r"must start at ARGV\[2\]"),
        (["KEYS[1] pending", "ARGV[1] a  ARGV[2..] b  ARGV[3..] c"], "one ARGV tail"),
        (["KEYS[1] pending", "ARGV[1] a  ARGV[2..] a"], "more than once: a"),
        (["KEYS[1..] pending"], "KEYS have no tail"),
        (["KEYS[1] pending", "ARGV[1] a {x, y}"], "only a tail"),
        (["KEYS[1] pending", "ARGV[1] a  ARGV[2..] b {x, 2y}"], "'2y' is not a name"),
        (["KEYS: as claim.lua", "KEYS[1] pending"], "both"),
        (["KEYS: as stamp.lua"], "declares no KEYS of its own"),
    ],
)
def test_a_header_off_the_grammar_fails_loudly(lines, error):
    with pytest.raises(ScriptDeclarationError, match=error):
        parse_declaration("example", header(*lines))


def test_a_script_without_a_header_fails_loudly():
    with pytest.raises(ScriptDeclarationError, match="no header"):
        parse_declaration("example", "-- KEYS[1] pending\nreturn 1\n")


def test_a_library_declaring_keys_of_its_own_fails_loudly():
    with pytest.raises(ScriptDeclarationError, match="a library declares no KEYS"):
        parse_declaration("_example", "-- Helpers.\n--   KEYS[1] pending\n\nlocal x = 1\n")


def test_only_a_script_with_the_keys_a_library_reads_may_include_it():
    with pytest.raises(ScriptDeclarationError, match="whose code uses the KEYS of claim.lua"):
        parse_declaration("example", header("KEYS[1] pending", "ARGV[1] now") + "--@include _stamp\n")


# ------------------------------------------------------------ the builders


def test_a_call_names_every_key_and_argument_or_is_refused(q):
    touch = scripts.get("touch")

    assert touch.keys_for(q.keys, job=q.keys.job("j1")) == [q.keys.job("j1"), q.keys.leases]
    assert touch.argv_for(now=0, id="j1", claim_token="t", lease_ms=100) == [0, "j1", "t", 100]
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'job'"):
        touch.keys_for(q.keys)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lease'"):
        touch.argv_for(now=0, id="j1", claim_token="t", lease=100)
    with pytest.raises(TypeError, match="count is left out, so start, defer_last_chance, global_concurrency"):
        scripts.get("claim").argv_for(
            now=0, claim_token="t", visibility_ms=1, worker_id="w", promote_limit=1, expired_ttl=0, start=1
        )


def keys_by_name(q: RedisJobQueue, spec: declarations.ScriptSpec, **given: str) -> dict[str, str]:
    """The queue's keys a script declares, by name, with the ones a call gives."""
    return {name: given[name] if name in given else getattr(q.keys, name) for name in spec.keys}


def test_enqueue_names_its_keys_and_arguments(q, clock):
    script, keys, args = q._enqueue_call(
        '{"n": 1}', job_id="j1", name="add", delay_ms=5, ttl_ms=6, unique_key="u", max_attempts=2, extra={"x": "1"}
    )

    assert script.spec.named_keys(keys) == keys_by_name(q, script.spec, job=q.keys.job("j1"))
    assert script.spec.named_argv(args) == {
        "now": clock(),
        "id": "j1",
        "delay_ms": 5,
        "ttl_ms": 6,
        "unique_key": "u",
        "queue": "jobs",
        "name": "add",
        "payload": '{"n": 1}',
        "max_attempts": 2,
        "extra": [{"field": "x", "value": "1"}],
    }


def test_enqueue_many_names_its_keys_and_arguments(q, clock):
    script, keys, args = q._enqueue_many_call(
        [("j1", "1"), ("j2", "2")], name="add", delay_ms=0, ttl_ms=0, max_attempts=None, extra={"x": "1"}
    )

    assert script.spec.named_keys(keys) == keys_by_name(q, script.spec)
    named = script.spec.named_argv(args)
    assert named["extra_count"] == 1
    assert named["extra_and_jobs"] == [
        {"key": "x", "value": "1"},
        {"key": "j1", "value": "1"},
        {"key": "j2", "value": "2"},
    ]


def test_a_batched_claim_names_its_keys_and_arguments(q, clock):
    script, keys, args = q.claim_many_call(5, "w1", lease_ms=700, start=2, defer_last_chance=True)

    assert script.spec.named_keys(keys) == keys_by_name(q, script.spec) == script.spec.named_keys(q._claim_keys())
    named = script.spec.named_argv(args)
    assert len(named.pop("claim_token")) == 32
    assert named == {
        "now": clock(),
        "visibility_ms": 700,
        "worker_id": "w1",
        "promote_limit": 100,
        "expired_ttl": q.expired_ttl_s(),
        "count": 5,
        "start": 2,
        "defer_last_chance": "1",
        "global_concurrency": 0,
        "rate_count": 0,
        "rate_window_ms": 0,
        "claim_ahead": "",
    }


def test_a_batched_completion_names_its_keys_and_arguments(q, clock):
    done = ClaimedJob(id="j1", payload=None, attempts=1, claim_token="t1")
    began = ClaimedJob(id="j2", payload=None, attempts=0, claim_token="t2")

    script, keys, args = q.complete_batch_call([(done, '"ok"', False)], [began])

    assert script.spec.named_keys(keys) == keys_by_name(q, script.spec)
    assert script.spec.named_argv(args) == {
        "now": clock(),
        "completed_ttl": q.completed_ttl_s,
        "history": q.history,
        "result_event_bytes": q.result_event_bytes,
        "jobs": [
            {"id": "j1", "claim_token": "t1", "result": '"ok"', "keep": "0"},
            {"id": "j2", "claim_token": "t2", "result": "", "keep": "s"},
        ],
    }


def test_a_start_names_its_keys_and_arguments(q, clock):
    job = ClaimedJob(id="j1", payload=None, attempts=0, claim_token="t1")

    script, keys, args = q.start_call([job])

    assert script.spec.named_keys(keys) == keys_by_name(q, script.spec)
    assert script.spec.named_argv(args) == {
        "now": clock(),
        "expired_ttl": q.expired_ttl_s(),
        "jobs": [{"id": "j1", "claim_token": "t1"}],
    }


def test_a_reclaim_names_its_keys_and_arguments(q, clock):
    script, keys, args = q._reclaim_call(10, ["w1", "w2"])

    assert script.spec.named_keys(keys) == keys_by_name(q, script.spec)
    assert script.spec.named_argv(args) == {
        "now": clock(),
        "visibility_ms": 5000,
        "limit": 10,
        "failed_ttl": q.failed_ttl_s,
        "expired_ttl": q.expired_ttl_s(),
        "worker_ids": ["w1", "w2"],
    }


# ------------------------------------------- what Redis receives, by name


@dataclass
class SentCall:
    """A script call as Redis's MONITOR saw it, read through its declaration."""

    script: str
    keys: dict[str, str]
    argv: dict[str, Any]


def monitor_arguments(line: str) -> list[str]:
    """The quoted arguments of a MONITOR line, unescaped (Redis quotes them as sdscatrepr does)."""
    escapes = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b"}

    def unescape(m: re.Match[str]) -> str:
        code = m.group(1)
        return chr(int(code[1:], 16)) if len(code) == 3 else escapes.get(code, code)

    return [re.sub(r"\\(x[0-9a-f]{2}|.)", unescape, arg) for arg in re.findall(r'"((?:[^"\\]|\\.)*)"', line)]


class ScriptCalls:
    """The script calls the server receives while a block runs, from clients
    other than the scripts themselves: ``with sent.during() as calls: ...``."""

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(port=port, decode_responses=True)
        for name in SCRIPTS:  # loaded, so that each call arrives as one EVALSHA
            self.client.script_load(scripts.get(name).source)

    @cached_property
    def by_sha(self) -> dict[str, str]:
        return {scripts.get(name).sha: name for name in SCRIPTS}

    @contextlib.contextmanager
    def during(self) -> Iterator[list[SentCall]]:
        calls: list[SentCall] = []
        with self.client.monitor() as monitor:  # on (its OK read) before the block runs
            yield calls
            self.client.echo("end of the block")
            while True:
                line = monitor.connection.read_response()
                if "end of the block" in line:
                    break
                if "[0 lua]" not in line and '"EVALSHA"' in line:
                    calls.append(self.read(monitor_arguments(line)))

    def read(self, command: list[str]) -> SentCall:
        _evalsha, sha, count, *rest = command
        spec = scripts.get(self.by_sha[sha]).spec
        n = int(count)
        return SentCall(spec.name, spec.named_keys(rest[:n]), spec.named_argv(rest[n:]))


@pytest.fixture
def sent(redis_server):
    calls = ScriptCalls(redis_server.port)
    yield calls
    calls.client.close()


def a_tour_of_every_script(q: RedisJobQueue, registry: Presence, midway: Callable[[], None]) -> Callable[[], None]:
    def tour() -> None:
        q.enqueue({"n": 1}, job_id="0" * 36, name="add", ttl_ms=60_000, unique_key="u1", extra={"x": "1"})  # enqueue
        q.enqueue_many([{"n": 2}, {"n": 3}, {"n": 4}], name="add")  # enqueue_many
        later = q.enqueue({"n": 5}, name="later", delay_ms=60_000)
        first = q.claim_nowait("w1")  # claim
        second, third = q.claim_many(2, "w1", start=1)  # claim
        q.start([third])  # start
        midway()
        q.touch(first, 9000)  # touch
        q.touch_many([second, third], 9000)  # touch
        q.cancel(third.id)  # cancel (a claimed job: asked)
        q.cancel(later)  # cancel (a delayed job: ended)
        q.report_progress(first, 0.5, "half way")  # progress
        q.complete(first, {"ok": True})  # complete
        q.fail_outcome(second, "boom", traceback="tb", retry_delay_ms=7, terminal=True)  # fail
        q.requeue(third, count_attempt=False, front=True, event="released", counter="releases", error="why")
        q.retry(second.id)  # retry
        q.replay([first.id])  # retry
        q.requeue_now(third.id)  # requeue_now
        q.delete(third.id)  # delete
        q.pause("in")  # pause
        q.resume("in")  # pause
        set_limits(q.client, q.keys, who="tour", global_concurrency=5, rate=Rate(100, 1000))  # limits
        limited = q.claim_nowait("w2")  # claim (within the limits: the rate's window, the slot's mark)
        assert limited is not None
        q.complete(limited, None)  # complete (a slot freed: a waiting worker woken)
        set_limits(q.client, q.keys, who="tour", reset=True)  # limits
        q.sweep(10)  # promote, reclaim, expire
        q.take_back_worker_jobs(["w9"])  # reclaim
        purge(q, "pending")  # purge
        q.claim(timeout_ms=100, worker_id="w1")  # claim, then on the empty queue BLMOVE and stamp
        registry.beat(stopping=False)  # heartbeat
        registry.reclaim_lapsed()  # lapsed
        schedules = ScheduleStore(q)
        every_second = Schedule(name="tour", job="add", queue=q.queue_name, every_ms=1000, overlap="queue")
        schedules.sync([every_second], 0)  # schedule_sync (from the epoch: its next tick has come)
        script, keys, args = schedules.due_call()
        now, due, _owed = ScheduleStore.parse_due(script(q.client, keys, args))  # schedules_due
        schedules.tick(every_second, due[0][1], due[0][1])  # tick
        schedules.run_now(every_second, now)  # tick (the last run unfinished: a run owed)
        schedules.release_owed(every_second, now)  # tick
        book = samples.SampleBook()
        book.ran(q.queue_name, completed=True, duration_s=0.01, latency_s=0.002, at_ms=now)
        samples.SampleSender("w1", [(q.queue_name, q.keys)]).flush(q.client, book)  # samples

    return tour


def test_every_call_the_package_sends_fits_its_script_declaration(q, r, sent, monkeypatch):
    registry = Presence("w1", [q], 1, lambda: "[]")
    monkeypatch.setattr(registry, "steady", lambda: True)  # as a worker whose beats reach Redis

    held: dict[str, str] = {}

    def look_at_the_keys() -> None:
        for name in KEY_TYPES:
            # Keys of the queue itself; a job's or a schedule's hash is named by a method.
            if isinstance(getattr(q.keys, name, None), str) and r.exists(getattr(q.keys, name)):
                held[name] = r.type(getattr(q.keys, name))

    with sent.during() as calls:
        a_tour_of_every_script(q, registry, look_at_the_keys)()

    assert {call.script for call in calls} == set(SCRIPTS), "the tour sends every script"
    for call in calls:
        for name, key in call.keys.items():
            if name == "job":
                assert key == q.keys.job(call.argv["id"])
            elif name == "worker":
                assert key == registry.keys.worker(call.argv["worker_id"])
            elif name == "purged":
                assert key == q.keys.pending
            elif name == "schedule":
                assert key == q.keys.schedule(call.argv["name"])
            elif name == "schedule_runs":
                assert key == q.keys.schedule_runs(call.argv["name"])
            else:
                assert key == getattr(q.keys if hasattr(QueueKeys, name) else registry.keys, name), (call.script, name)

    assert held == {name: KEY_TYPES[name] for name in held}, "each key the scripts wrote holds what its name says"
    assert {"pending", "processing", "scheduled", "leases", "deadlines", "unique", "stats"} <= set(held)

    def argv_of(script: str) -> list[dict[str, Any]]:
        return [call.argv for call in calls if call.script == script]

    assert argv_of("enqueue")[0]["extra"] == [{"field": "x", "value": "1"}]
    assert argv_of("enqueue")[0]["unique_key"] == "u1"
    (fail,) = argv_of("fail")
    assert (fail["error"], fail["traceback"], fail["retry_delay_ms"], fail["mode"]) == ("boom", "tb", "7", "terminal")
    (requeue,) = argv_of("requeue")
    assert (requeue["count_attempt"], requeue["place"], requeue["event"]) == ("0", "front", "released")
    assert (requeue["counter"], requeue["error"]) == ("releases", "why")
    assert {touch["lease_ms"] for touch in argv_of("touch")} == {"9000"}
    assert [(p["fraction"], p["message"]) for p in argv_of("progress")] == [("0.5", "half way")]
    assert [(pause["action"], pause["direction"]) for pause in argv_of("pause")] == [("pause", "in"), ("resume", "in")]
    assert argv_of("reclaim")[-1]["worker_ids"] == ["w9"]
    assert argv_of("stamp")[-1]["job_id"] == ""  # the head of claiming: whatever BLMOVE moved
    assert argv_of("purge")[0]["statuses"] == ["pending"]
    assert argv_of("heartbeat")[0]["worker_id"] == "w1"
