"""Rollout benchmark: a firmware release rolled out to N simulated terminals (issue 16).

Starts ``tms up --simulate N`` in a scratch data directory (PostgreSQL, Mosquitto,
ingest, the console that serves the images, the command sender, the rollout driver and
the simulated fleet, each its own process, as in production), adds and releases an
image of --image-mb with ``tms firmware add/release``, creates the rollout with
``rollouts.manage.create`` (as the console does) and watches its rows. Prints:

- the time from the rollout's creation to its completion (``rollout.created_at`` to
  ``finished_at``), each wave's span, and the tasks per state at the end;
- the download bandwidth the console served, peak (fullest 1 s bin) and mean: each
  firmware command's result says when its download began and ended (the agent's
  clock, the same host's); the image's size is spread evenly over that span. The
  console is the only source (no mirror), so what the agents received is what it
  served, HTTP headers aside;
- each part's CPU (utime + stime of its processes from /proc, as % of one core: the
  mean over the rollout and the fullest 1 s) and its peak RSS.

--halt rolls out an image that fails its boot on --fail-percent of the terminals,
its version chosen so that wave 1 crosses the error threshold. Prints the time from
the finish of the failure that crossed it (found by replaying the driver's own rule,
``rollouts.decide.halt_reason``) to the halt (the ``rollout.halt`` audit row), and
the firmware commands created after the halt: the issue wants new installs stopped
within 5 s. Give --concurrency below wave 1's size, or wave 1 is all started at once
and nothing is left to hold back.

--window SPEC gives the rollout a maintenance window (the policy's ``window``, as the
console's form does; stores of their own keep theirs). Outside it the driver sends
``download_only`` commands: the agents download and verify the image and their tasks
wait in ``waiting_window``. --download-only picks a one-hour window 12 h from now (UTC,
the seeded stores' zone; checked against every store's zone and window before the
rollout is created) and implies one wave of 100 %, no health gate and --concurrency
equal to --terminals, unless given. This measures the download side at a size whose
installs would take hours of CPU (each pushes some 8,200 USB frames through the real
driver). Such a run never completes: it ends once every task waits for its window or
has failed, and prints when 50/90/100 % had downloaded and verified (the agents'
``verified`` times in the commands' results, which download-only results carry too,
as they carry the download's begin and end), besides the figures above.

The driver's start rate is unlimited unless the policy has one: at 10,000 terminals
give --rate, or all 10,000 downloads begin at once. 600 a minute (a burst of 100, then
10 a second: 4 MiB x 10/s = 40 MiB/s, below the 60 MiB/s one console served before)
starts the last one after about 16.5 min; the run takes some 20-25 min with the
platform's start. A higher --rate probes the console's ceiling instead. The images
stay on disk until their install: 10,000 x 4 MiB is 39 GiB, checked before the start
(8 MiB would need 78 GiB). For 10,000 terminals:

    .venv/bin/python bench/rollout.py --terminals 10000 --image-mb 4 --download-only \
        --rate 600 --timeout 5400

Loopback only. Bounded by --timeout (it then prints what was reached); stops the
platform and removes the data directory (unless --keep), on Ctrl-C and SIGTERM too.
On a shared machine run it niced: the fleet's installs are CPU-bound.

    nice -n 19 .venv/bin/python bench/rollout.py --terminals 50 --image-mb 1
    nice -n 19 .venv/bin/python bench/rollout.py --terminals 50 --image-mb 1 --halt \
        --concurrency 2
    nice -n 19 .venv/bin/python bench/rollout.py --terminals 50 --image-mb 1 --download-only
    .venv/bin/python bench/rollout.py                       # 10,000 terminals, 8 MB
"""

from __future__ import annotations

# ruff: noqa: E402  (imports follow the sys.path fix below, on purpose)
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import argparse
import json
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import psutil
import psycopg
from sqlmodel import Session

from agent.sim.firmware import ImageHeader, make_image
from rollouts import manage
from rollouts.decide import RolloutPolicy, RolloutProgress, RolloutState, WaveProgress, halt_reason
from rollouts.driver import ACTOR
from rollouts.driver import _window as window_for_store  # the driver's own rule
from rollouts.rollout_json import policy_from_json
from rollouts.targets import Target
from rollouts.tasks import FAILURES, FINAL, TaskState
from rollouts.windows import WindowError, in_window, next_window_start, parse_window
from shared.db import make_engine
from shared.lifetime import preexec_die_with_parent
from shared.ports import free_port

MIB = 2**20
GOOD_VERSION = "9.0.0"
SEED = 16  # the same waves on every run of the same size
HALT_LIMIT_S = 5.0  # the issue: new installs stop within 5 s of the threshold
PROGRESS_EVERY_S = 10.0
FD_SLACK = 512  # per connection one descriptor, plus logs, pipes and the database
DISK_SLACK = 2 * 2**30  # PostgreSQL, logs, the console's copy of the image
CLOSED_FOR = timedelta(hours=12)  # --download-only: the window opens this long from now
WAITING = "waiting for the window"  # the outcome of a run whose window stays closed

# --- the figures: pure ---------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    start: float  # epoch seconds
    end: float
    size: int  # bytes


@dataclass(frozen=True)
class Bandwidth:
    total_bytes: int
    peak: float  # bytes/s, fullest bin
    mean: float  # bytes/s, first start to last end
    span_s: float


def bandwidth(downloads: Sequence[Download], bin_s: float = 1.0) -> Bandwidth:
    """Bytes per second served: each download's bytes spread evenly over its span and
    summed in bins of ``bin_s`` from the first start."""
    if not downloads:
        return Bandwidth(0, 0.0, 0.0, 0.0)
    origin = min(d.start for d in downloads)
    bins: dict[int, float] = defaultdict(float)
    for d in downloads:
        start, end = d.start, max(d.end, d.start)
        first, last = int((start - origin) // bin_s), int((end - origin) // bin_s)
        if end == start:
            bins[first] += d.size
            continue
        rate = d.size / (end - start)
        for index in range(first, last + 1):
            low = max(start, origin + index * bin_s)
            high = min(end, origin + (index + 1) * bin_s)
            if high > low:
                bins[index] += rate * (high - low)
    total = sum(d.size for d in downloads)
    span = max(d.end for d in downloads) - origin
    # Downloads all within less than a bin: their rate, not their bytes over a whole bin.
    peak = max(bins.values()) / (min(bin_s, span) if span > 0 else bin_s)
    return Bandwidth(total, peak, total / span if span > 0 else peak, span)


def download_of(result: Mapping[str, Any] | None, size: int) -> Download | None:
    """The download span a firmware command's result reports (agent/PROTOCOL.md: its
    ``states`` with their times), or None if it never finished downloading."""
    start, end = state_at(result, "downloading"), state_at(result, "downloaded")
    return None if start is None or end is None else Download(start, end, size)


def state_at(result: Mapping[str, Any] | None, state: str) -> float | None:
    """When (epoch seconds) a firmware command's result says its update first reached
    ``state``; None if it did not."""
    states = (result or {}).get("states")
    if not isinstance(states, list):
        return None
    at = {s.get("state"): s.get("at") for s in reversed(states) if isinstance(s, Mapping)}
    try:
        return datetime.fromisoformat(str(at[state])).timestamp()
    except (KeyError, ValueError):
        return None


def marks(times: Sequence[float], total: int, fractions: Sequence[float]) -> list[float | None]:
    """When each fraction of ``total`` had been reached: the ceil(f * total)-th time; None
    for a fraction never reached."""
    ordered = sorted(times)
    needed = [max(1, math.ceil(f * total)) for f in fractions]
    return [ordered[n - 1] if n <= len(ordered) else None for n in needed]


def closed_window(now: datetime) -> str:
    """A one-hour window (HH:MM-HH:MM) that opens CLOSED_FOR after ``now``, in its zone."""
    start = now + CLOSED_FOR
    end = start + timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}"


def waiting_for_window(counts: Mapping[tuple[str, bool], int]) -> bool:
    """Whether nothing moves until a window opens: tasks wait for it, and every other
    one has ended or is queued in a wave not yet opened. ``counts``: tasks per (state,
    their wave opened)."""
    waiting = counts.get((TaskState.WAITING_WINDOW, True), 0)
    moving = sum(
        n
        for (state, opened), n in counts.items()
        if TaskState(state) not in FINAL
        and state != TaskState.WAITING_WINDOW
        and (opened or state != TaskState.QUEUED)
    )
    return waiting > 0 and not moving


def cpu_used(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds a part's processes used between two snapshots {pid: cumulative CPU}:
    a process that appeared started meanwhile; one that ended is lost (its last
    interval is not counted)."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def cpu_load(intervals: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """(mean, peak) % of one core from (start, end, CPU seconds used) intervals."""
    spans = [(end - start, used) for start, end, used in intervals if end > start]
    if not spans:
        return 0.0, 0.0
    elapsed = sum(span for span, _ in spans)
    return 100 * sum(u for _, u in spans) / elapsed, max(100 * u / s for s, u in spans)


def part_of(cmdline: Sequence[str]) -> str:
    """A `tms up` child's part: the `tms` subcommand it runs, else its program's name."""
    args = list(cmdline)
    for index, arg in enumerate(args[:-1]):
        if arg == "-m" and args[index + 1] == "tms" and index + 2 < len(args):
            return args[index + 2]
    return Path(args[0]).name if args else "?"


@dataclass(frozen=True)
class TaskEnd:
    wave: int
    state: TaskState
    finished_at: datetime | None


def threshold_crossed_at(
    tasks: Sequence[TaskEnd], wave_starts: Mapping[int, datetime | None], policy: RolloutPolicy
) -> datetime | None:
    """When the failure finished that made the driver's halt rule true: the rule is
    replayed on the counts as of each failure's finish (health gating is not)."""
    failures = sorted(t.finished_at for t in tasks if t.state in FAILURES and t.finished_at)
    for at in failures:
        if halt_reason(_progress_at(tasks, wave_starts, at), policy) is not None:
            return at
    return None


def _progress_at(
    tasks: Sequence[TaskEnd], wave_starts: Mapping[int, datetime | None], at: datetime
) -> RolloutProgress:
    counts: dict[int, Counter[TaskState]] = {number: Counter() for number in wave_starts}
    started = {n: s is not None and s <= at for n, s in wave_starts.items()}
    for task in tasks:
        ended = task.finished_at is not None and task.finished_at <= at
        state: TaskState = task.state
        if task.state is not TaskState.SKIPPED and not (task.state in FINAL and ended):
            # Unfinished then: in flight, or queued if its wave had not opened.
            state = TaskState.DOWNLOADING if started[task.wave] else TaskState.QUEUED
        counts[task.wave][state] += 1
    waves = tuple(
        WaveProgress(counts=dict(counts[n]), ready=0, started=started[n]) for n in sorted(counts)
    )
    return RolloutProgress(state=RolloutState.RUNNING, waves=waves)


def failing_version(wave_one: Sequence[str], percent: float, error_pct: float) -> str:
    """A version whose image fails its boot on more of wave 1 than the error threshold
    allows (the simulator picks the failing terminals by a hash of serial and version)."""
    for minor in range(1, 10_000):
        header = ImageHeader(f"9.1.{minor}", percent)
        failing = sum(1 for serial in wave_one if header.fails_on(serial))
        if Fraction(100 * failing, len(wave_one)) > Fraction(repr(float(error_pct))):
            return header.version
    raise SystemExit(f"no version fails its boot on enough of wave 1's {len(wave_one)} terminals")


def _quantiles(values: Sequence[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {statistics.median(ordered):.1f} s, p99 {p99:.1f} s, max {ordered[-1]:.1f} s"


# --- the platform ----------------------------------------------------------------------


@dataclass
class Sampler:
    """Every second: each part's processes' cumulative CPU and their summed RSS."""

    root: int
    intervals: dict[str, list[tuple[float, float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    peak_rss: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stop: threading.Event = field(default_factory=threading.Event)

    def snapshot(self) -> dict[str, tuple[dict[int, float], int]]:
        parts: dict[str, tuple[dict[int, float], int]] = {}
        try:
            children = psutil.Process(self.root).children()
        except psutil.NoSuchProcess:
            return parts
        for child in children:
            try:
                name = part_of(child.cmdline())
                procs = [child, *child.children(recursive=True)]
            except psutil.Error:
                continue
            cpu, rss = parts.setdefault(name, ({}, 0))
            for proc in procs:
                try:
                    times = proc.cpu_times()
                    cpu[proc.pid] = times.user + times.system
                    rss += proc.memory_info().rss
                except psutil.Error:
                    continue
            parts[name] = (cpu, rss)
        return parts

    def run(self) -> None:
        before, then = self.snapshot(), time.time()
        while not self.stop.wait(1.0):
            after, now = self.snapshot(), time.time()
            for name, (cpu, rss) in after.items():
                used = cpu_used(before.get(name, ({}, 0))[0], cpu)
                self.intervals[name].append((then, now, used))
                self.peak_rss[name] = max(self.peak_rss[name], rss)
            before, then = after, now

    def load(self, name: str, start: float, end: float) -> tuple[float, float]:
        return cpu_load([i for i in self.intervals.get(name, []) if start <= i[1] <= end + 1])


@dataclass
class Platform:
    data_dir: Path
    up: subprocess.Popen[bytes]
    url: str
    env: dict[str, str]

    @property
    def log(self) -> Path:
        return self.data_dir / "bench-up.log"

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []

    def tms(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tms", "--data-dir", str(self.data_dir), *args],
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode:
            raise SystemExit(f"tms {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def raise_fd_limit(terminals: int) -> None:
    """10,000 connections need more than 1,024 descriptors (the children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = terminals + FD_SLACK
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"the open-files hard limit is {hard}; {terminals} terminals need {needed}"
        )
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextmanager
def running_platform(
    data_dir: Path, args: argparse.Namespace, deadline: float
) -> Iterator[Platform]:
    db_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMS_")}
    command = [
        sys.executable, "-m", "tms", "up", "--simulate", str(args.terminals),
        "--heartbeat", str(args.heartbeat), "--fault-rate", "0", "--data-dir", str(data_dir),
        "--db-port", str(db_port), "--broker-port", str(free_port()),
        "--console-port", str(free_port()), "--metrics-port", str(free_port()),
    ]  # fmt: skip
    log = (data_dir / "bench-up.log").open("wb")
    # Its output to a file: a pipe nobody reads would stop it once full. Its own
    # session: Ctrl-C reaches only us, and we still read the database to report before
    # stopping it. It dies with us even if we are killed (its parts die with it).
    up = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=preexec_die_with_parent(),
    )  # fmt: skip
    platform = Platform(data_dir, up, "", env)
    try:
        while "Press Ctrl-C" not in platform.log.read_text(errors="replace"):
            if up.poll() is not None:
                raise SystemExit(f"tms up ended with {up.returncode}:\n{platform.tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"tms up not ready within --timeout:\n{platform.tail()}")
            time.sleep(0.5)
        password = json.loads((data_dir / "secrets.json").read_text())["database_password"]
        platform.url = f"postgresql://tms:{password}@127.0.0.1:{db_port}/tms"
        yield platform
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(120)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        log.close()


def check_disk(directory: str, needed: int) -> None:
    """Every downloaded image stays on the store PC until its install: the fleet's
    directories hold one per terminal waiting for a window."""
    free = shutil.disk_usage(directory).free
    if free < needed + DISK_SLACK:
        raise SystemExit(
            f"{directory} has {free / 2**30:.1f} GiB free; the images need "
            f"{(needed + DISK_SLACK) / 2**30:.1f} GiB: give a smaller --image-mb"
        )


def check_windows(platform: Platform, spec: str, closed_until: float | None) -> str:
    """The terminals' stores by zone and window (their own, else ``spec``, as the driver
    reads them), and whether each is open now; with ``closed_until`` (epoch seconds),
    refuses a window open now or opening before it."""
    rows = platform.sql(
        "SELECT COALESCE(s.timezone, 'UTC'), s.maintenance_window, count(DISTINCT s.id),"
        " count(*) FROM terminal AS t LEFT JOIN store AS s ON s.id = t.store_id"
        " WHERE t.decommissioned_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2"
    )
    now = datetime.now(UTC)
    lines = []
    for zone, own, stores, terminals in rows:
        window = window_for_store(own, spec)
        opens = next_window_start(now, zone, window)
        state = "open now" if in_window(now, zone, window) else f"opens {opens:%Y-%m-%d %H:%M} UTC"
        whose = "their own" if own else "the rollout's"
        lines.append(f"{stores} stores ({terminals} terminals) in {zone}, {whose} window "
                     f"{window or 'any time'}: {state}")  # fmt: skip
        if closed_until is not None and opens.timestamp() <= closed_until:
            raise SystemExit(f"--download-only: a window opens before --timeout: {lines[-1]}")
    return "\n".join(lines)


def _parts_of(up: int) -> set[str]:
    return {part_of(child.cmdline()) for child in psutil.Process(up).children()}


def wait_online(platform: Platform, terminals: int, deadline: float) -> float:
    start = time.monotonic()
    while time.monotonic() < deadline:
        (online,) = platform.sql(
            "SELECT count(*) FROM terminal WHERE status = 'online' AND firmware_version IS NOT NULL"
        )[0]
        if online >= terminals:
            return time.monotonic() - start
        time.sleep(1)
    raise SystemExit(f"not all {terminals} terminals online (versions known) within --timeout")


# --- the rollout -----------------------------------------------------------------------


def release(platform: Platform, version: str, image: bytes) -> None:
    path = platform.data_dir / "bench-images" / f"{version}.img"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(image)
    platform.tms("firmware", "add", str(path), "--version", version)
    platform.tms("firmware", "release", version)


def first_wave(platform: Platform, wave_spec: str) -> tuple[str, ...]:
    engine = make_engine(platform.url, pool_size=1)
    try:
        with Session(engine) as session:
            return manage.plan(session, GOOD_VERSION, Target(), wave_spec, SEED).waves[0]
    finally:
        engine.dispose()


def create(platform: Platform, version: str, wave_spec: str, policy: dict[str, Any]) -> int:
    engine = make_engine(platform.url, pool_size=1)
    try:
        with Session(engine) as session:
            rollout_id = manage.create(
                session, name=f"bench {version}", version=version, target=Target(),
                policy=policy, wave_spec=wave_spec, actor="bench", seed=SEED,
            )  # fmt: skip
            session.commit()
    finally:
        engine.dispose()
    return rollout_id


def task_counts(platform: Platform, rollout_id: int) -> dict[tuple[str, bool], int]:
    """Tasks per (state, their wave opened)."""
    rows = platform.sql(
        "SELECT u.state, w.started_at IS NOT NULL, count(*) FROM update_task AS u"
        " JOIN rollout_wave AS w ON w.rollout_id = u.rollout_id AND w.number = u.wave"
        " WHERE u.rollout_id = %s GROUP BY 1, 2",
        rollout_id,
    )
    return {(state, opened): n for state, opened, n in rows}


def _counts_text(counts: Mapping[str, int]) -> str:
    order = [state.value for state in TaskState]
    return ", ".join(f"{s} {counts[s]}" for s in sorted(counts, key=order.index)) or "none"


def watch(
    platform: Platform, rollout_id: int, halt: bool, observe_s: float, deadline: float
) -> str:
    """Until the rollout completes (or halts: then until what was in flight has finished
    and --observe seconds more have passed; or nothing moves until a window opens), the
    deadline, or Ctrl-C; its outcome."""
    start = time.monotonic()
    shown = start
    quiet_since: float | None = None
    try:
        while True:
            (state,) = platform.sql("SELECT state FROM rollout WHERE id = %s", rollout_id)[0]
            by_wave = task_counts(platform, rollout_id)
            counts: Counter[str] = Counter()
            for (task_state, _), n in by_wave.items():
                counts[task_state] += n
            now = time.monotonic()
            if now - shown >= PROGRESS_EVERY_S:
                print(f"  +{now - start:5.0f} s  {state}: {_counts_text(counts)}", flush=True)
                shown = now
            if state in ("completed", "cancelled") or (state == "halted" and not halt):
                return str(state)
            if state == "running" and waiting_for_window(by_wave):
                return WAITING
            if state == "halted":
                in_flight = sum(n for s, n in counts.items() if TaskState(s) not in FINAL
                                and s != TaskState.QUEUED)  # fmt: skip
                quiet_since = (quiet_since or now) if not in_flight else None
                if quiet_since is not None and now - quiet_since >= observe_s:
                    return "halted"
            if now > deadline:
                return "timed out"
            time.sleep(0.5)
    except KeyboardInterrupt:
        return "interrupted"


def report(
    platform: Platform, sampler: Sampler, rollout_id: int, args: argparse.Namespace, outcome: str
) -> None:
    created, finished, halt_text, policy_json, size, version, now = platform.sql(
        "SELECT r.created_at, r.finished_at, r.halt_reason, r.policy, f.size, f.version,"
        " clock_timestamp() FROM rollout AS r JOIN firmware AS f ON f.id = r.firmware_id"
        " WHERE r.id = %s",
        rollout_id,
    )[0]
    waves = platform.sql(
        "SELECT number, size, started_at FROM rollout_wave WHERE rollout_id = %s ORDER BY number",
        rollout_id,
    )
    tasks = platform.sql(
        "SELECT wave, state, started_at, finished_at, updated_at FROM update_task"
        " WHERE rollout_id = %s",
        rollout_id,
    )
    results = platform.sql(
        "SELECT c.terminal_id, c.result FROM command AS c WHERE c.name = 'firmware'"
        " AND c.requested_by = %s AND c.created_at >= %s AND c.terminal_id IN"
        " (SELECT terminal_id FROM update_task WHERE rollout_id = %s)",
        ACTOR, created, rollout_id,
    )  # fmt: skip
    end = finished or now

    def since(at: datetime | None) -> str:
        return "-" if at is None else f"+{(at - created).total_seconds():.1f} s"

    print(f"\n--- rollout {rollout_id}: {outcome}")
    print(f"terminals            {args.terminals} simulated (tms up --simulate), "
          f"heartbeat {args.heartbeat:g} s")  # fmt: skip
    print(f"image                {size / MIB:.1f} MiB, firmware {version}")
    sizes = ", ".join(str(row[1]) for row in waves)
    print(f"waves                {len(waves)} ({args.waves}): {sizes} terminals")
    rate = f"{args.rate:g}/min" if args.rate else "none"
    health = "off" if args.no_health_gate else "on"
    print(f"policy               max_concurrent {args.concurrency}, rate {rate}, health gate "
          f"{health}, window {args.window or 'none'}, the rest the product's defaults")  # fmt: skip
    what = "created to completed" if finished else f"created to now ({outcome})"
    print(f"total time           {(end - created).total_seconds():.1f} s, {what}")
    for number, wave_size, started_at in waves:
        done = [t[3] for t in tasks if t[0] == number and t[3] is not None]
        print(f"  wave {number:<14} {wave_size} terminals: opened {since(started_at)}, "
              f"last finished {since(max(done) if done else None)}")  # fmt: skip
    print(f"tasks                {_counts_text(Counter(t[1] for t in tasks))}")
    spans = [(t[3] - t[2]).total_seconds() for t in tasks if t[2] and t[3]]
    print(f"task, start->finish  {_quantiles(spans)}")
    _report_downloaded(tasks, results, created)
    downloads = [d for _, result in results if (d := download_of(result, size)) is not None]
    served = bandwidth(downloads)
    print(f"downloads            {len(downloads)} finished, {served.total_bytes / MIB:.1f} MiB; "
          f"each {_quantiles([d.end - d.start for d in downloads])}")  # fmt: skip
    print(f"bandwidth served     peak {served.peak / MIB:.1f} MiB/s (1 s bins), mean "
          f"{served.mean / MIB:.1f} MiB/s over the {served.span_s:.1f} s of downloading "
          "(each download's size spread over its span, from the commands' results)")  # fmt: skip
    if args.halt or halt_text:
        _report_halt(platform, rollout_id, halt_text, policy_json, waves, tasks, since)
    window = (created.timestamp(), end.timestamp())
    print("CPU, % of one core   mean   peak   peak RSS (all its processes)")
    for name in sorted(sampler.intervals, key=lambda n: (n != "console", n)):
        mean, peak = sampler.load(name, *window)
        print(f"  {name:<18} {mean:5.0f}  {peak:5.0f}   {sampler.peak_rss[name] / MIB:6.0f} MiB")
    load = os.getloadavg()[0]
    print(f"host                 {os.cpu_count()} cores, load average {load:.1f} now; "
          f"this bench at nice {os.nice(0)}")  # fmt: skip


def _report_downloaded(
    tasks: list[tuple[Any, ...]], results: list[tuple[Any, ...]], created: datetime
) -> None:
    """When 50/90/100 % of the tasks had their image downloaded and verified (each
    terminal's first ``verified`` in its commands' results, the agent's clock), and when
    the driver had moved the last waiting task to waiting_window."""
    verified: dict[int, float] = {}
    for terminal_id, result in results:
        at = state_at(result, "verified")
        if at is not None:
            verified[terminal_id] = min(at, verified.get(terminal_id, at))
    times = [at - created.timestamp() for at in verified.values()]
    shown = ", ".join(
        f"{round(100 * f)}% " + ("-" if at is None else f"+{at:.1f} s")
        for f, at in zip((0.5, 0.9, 1.0), marks(times, len(tasks), (0.5, 0.9, 1.0)), strict=True)
    )
    print(f"downloaded, verified {shown} of {len(tasks)} tasks ({len(verified)} reached it; "
          "the agents' 'verified' times in the commands' results)")  # fmt: skip
    waiting = [t[4] for t in tasks if t[1] == TaskState.WAITING_WINDOW]
    if waiting:
        last = (max(waiting) - created).total_seconds()
        print(f"  waiting_window     {len(waiting)} tasks, the last moved there +{last:.1f} s "
              "(the driver's updated_at)")  # fmt: skip


def _report_halt(
    platform: Platform,
    rollout_id: int,
    halt_text: str | None,
    policy_json: dict[str, Any],
    waves: list[tuple[Any, ...]],
    tasks: list[tuple[Any, ...]],
    since: Any,
) -> None:
    (halt_at,) = platform.sql(
        "SELECT min(at) FROM audit_event WHERE action = 'rollout.halt' AND target = %s",
        f"rollout:{rollout_id}",
    )[0]
    print(f"halt                 {halt_text or 'none: the rollout did not halt'}")
    if halt_at is None:
        return
    crossed = threshold_crossed_at(
        [TaskEnd(t[0], TaskState(t[1]), t[3]) for t in tasks],
        {number: started_at for number, _, started_at in waves},
        policy_from_json(policy_json),
    )
    if crossed is None:
        print(f"  halted {since(halt_at)}; no failure crossed the error or success threshold")
    else:
        lag = (halt_at - crossed).total_seconds()
        verdict = "met" if lag <= HALT_LIMIT_S else "NOT met"
        print(f"  threshold crossed  {since(crossed)}, by a failure's finish (agent's clock)")
        print(f"  halted             {since(halt_at)}: {lag:.2f} s after it "
              f"(limit {HALT_LIMIT_S:g} s: {verdict})")  # fmt: skip
    in_flight = sum(1 for t in tasks if t[2] and t[2] <= halt_at and not (t[3] and t[3] <= halt_at))
    (after,) = platform.sql(
        "SELECT count(*) FROM command WHERE name = 'firmware' AND requested_by = %s"
        " AND created_at > %s AND terminal_id IN"
        " (SELECT terminal_id FROM update_task WHERE rollout_id = %s)",
        ACTOR, halt_at, rollout_id,
    )[0]  # fmt: skip
    print(f"  in flight at halt  {in_flight} (they finish: the halt starts nothing new)")
    print(f"  installs after     {after} firmware commands created after the halt")


# --- main ------------------------------------------------------------------------------


def run(platform: Platform, args: argparse.Namespace, deadline: float, started: float) -> str:
    print(f"platform up after {time.monotonic() - started:.1f} s", flush=True)
    if "rollouts" not in _parts_of(platform.up.pid):
        raise SystemExit("this `tms up` runs no rollout driver (tms/platform_parts.py)")
    sampler = Sampler(platform.up.pid)
    threading.Thread(target=sampler.run, name="sampler", daemon=True).start()
    try:
        took = wait_online(platform, args.terminals, deadline)
        print(f"{args.terminals} terminals online after {took:.1f} s", flush=True)
        size = int(args.image_mb * MIB)
        policy: dict[str, Any] = {"max_concurrent": args.concurrency}
        if args.rate:
            policy["rate_per_minute"] = args.rate
        if args.no_health_gate:
            policy["health_margin_points"] = None
        if args.window:
            policy["window"] = args.window
            closed_until = time.time() + deadline - time.monotonic() if args.download_only else None
            print(check_windows(platform, args.window, closed_until), flush=True)
        if args.halt:
            release(platform, GOOD_VERSION, make_image(GOOD_VERSION, size=size))  # to plan with
            wave_one = first_wave(platform, args.waves)
            error_pct = policy_from_json(policy).error_threshold_pct
            version = failing_version(wave_one, args.fail_percent, error_pct)
            image = make_image(version, fail_boot_percent=args.fail_percent, size=size)
            failing = sum(ImageHeader(version, args.fail_percent).fails_on(s) for s in wave_one)
            print(f"firmware {version} fails its boot on {failing} of wave 1's "
                  f"{len(wave_one)} terminals", flush=True)  # fmt: skip
        else:
            version, image = GOOD_VERSION, make_image(GOOD_VERSION, size=size)
        added = time.monotonic()
        release(platform, version, image)
        print(f"firmware {version} ({size / MIB:.1f} MiB) added, signed and released in "
              f"{time.monotonic() - added:.1f} s", flush=True)  # fmt: skip
        rollout_id = create(platform, version, args.waves, policy)
        print(f"rollout {rollout_id} created", flush=True)
        outcome = watch(platform, rollout_id, args.halt, args.observe, deadline)
        report(platform, sampler, rollout_id, args, outcome)
        return outcome
    finally:
        sampler.stop.set()


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--image-mb", type=float, default=8.0, help="image size, MiB")
    parser.add_argument("--waves", default=None,
                        help="wave spec (default 1,10,50,100; with --halt 10,100)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=None,
                        help="policy max_concurrent (default 100; --download-only: "
                        "--terminals)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=None,
                        help="policy rate_per_minute (default none: no limit)")  # fmt: skip
    parser.add_argument("--window", default=None,
                        help="policy window, e.g. 02:00-05:00, in each store's zone")  # fmt: skip
    parser.add_argument("--download-only", action="store_true",
                        help="a window closed for the run: the download side alone")  # fmt: skip
    parser.add_argument("--no-health-gate", action="store_true",
                        help="policy health_margin_points null (no health gating)")  # fmt: skip
    parser.add_argument("--halt", action="store_true", help="an image failing wave 1's boot")
    parser.add_argument("--fail-percent", type=float, default=20.0,
                        help="with --halt: terminals whose boot fails, %%")  # fmt: skip
    parser.add_argument("--observe", type=float, default=10.0,
                        help="with --halt: seconds to watch after the halt settled")  # fmt: skip
    parser.add_argument("--heartbeat", type=float, default=10.0, help="simulated heartbeat, s")
    parser.add_argument("--timeout", type=float, default=7200.0, help="the whole run, s")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    if args.download_only:
        if args.halt or args.window:
            parser.error("--download-only picks its own window, and nothing installs to halt")
        args.window = closed_window(datetime.now(UTC))
        args.waves = args.waves or "100"
        args.no_health_gate = True
        args.concurrency = args.concurrency or args.terminals
    args.waves = args.waves or ("10,100" if args.halt else "1,10,50,100")
    args.concurrency = args.concurrency or 100
    if not 0 < args.image_mb * MIB <= 16 * MIB:
        parser.error("--image-mb: more than 0, at most 16 (what a TC-200 stages)")
    try:
        window = parse_window(args.window or "")
    except WindowError as exc:
        parser.error(f"--window: {exc}")
    args.window = None if window is None else str(window)

    started = time.monotonic()
    deadline = started + args.timeout
    raise_fd_limit(args.terminals)
    # A rollout with a window keeps every image until its install; else only those in flight.
    kept = args.terminals if args.window else min(args.terminals, args.concurrency)
    check_disk(tempfile.gettempdir(), kept * int(args.image_mb * MIB))
    signal.signal(signal.SIGTERM, _interrupt)
    data_dir = Path(tempfile.mkdtemp(prefix="tms-bench-rollout-"))
    data_dir.chmod(0o755)  # PostgreSQL, run as its own user, reads its directory below
    print(f"starting tms up with {args.terminals} simulated terminals in {data_dir}", flush=True)
    outcome = "interrupted"
    try:
        with running_platform(data_dir, args, deadline) as platform:
            outcome = run(platform, args, deadline, started)
    except KeyboardInterrupt:
        print("interrupted: stopping the platform", file=sys.stderr)
    finally:
        if args.keep:
            print(f"data directory kept: {data_dir} (tms up's output: bench-up.log)")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    # Scripts see a run that did not reach its end: timed out, interrupted, or (without
    # --halt) halted. With a window, waiting for it is an end.
    ends = {"halted"} if args.halt else {"completed", WAITING} if args.window else {"completed"}
    sys.exit(0 if outcome in ends else 1)


if __name__ == "__main__":
    main()
