"""Fleet simulator benchmark: memory and CPU per simulated terminal, and connect time.

Starts its own Mosquitto on a free loopback port with one account per terminal (the
broker's own password/ACL renderers, no database needed), runs ``tms simulate`` against
it, waits until every terminal's retained presence says online, then measures the
simulator (all its processes) and Mosquitto over a window. Bounded: it stops everything
after ``--duration`` seconds of measurement.

    .venv/bin/python bench/simulate.py --terminals 1000 --heartbeat 10 --duration 60
    .venv/bin/python bench/simulate.py --terminals 10000 --heartbeat 10 --duration 60

10,000 connections need more than the usual 1,024 file descriptors per process, for
Mosquitto and for the simulator: this raises the soft limit to the hard one (children
inherit it) and refuses to start when the hard limit is too low.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.sim.fleet_file import write_fleet_file  # noqa: E402
from broker.mosquitto import MosquittoFiles, MosquittoProcess, find_binary  # noqa: E402
from registry.provisioning import BrokerAccount  # noqa: E402
from shared.credentials import generate_secret, hash_secret  # noqa: E402
from shared.models import AccountKind  # noqa: E402
from shared.ports import free_port  # noqa: E402
from shared.settings import MqttClientSettings  # noqa: E402

OBSERVER = "tms-ingest"
# Descriptors per connection on each side, plus slack for logs, pipes and the database.
FD_SLACK = 512


def raise_fd_limit(terminals: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = terminals + FD_SLACK
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"the hard open-files limit is {hard}, {terminals} connections need {needed}: "
            "raise it (ulimit -Hn, or LimitNOFILE= in the systemd unit)"
        )
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Observer:
    """Counts online presences and telemetry, as ingest would see them."""

    def __init__(self, port: int, secret: str) -> None:
        self.online: set[str] = set()
        self.offline: set[str] = set()
        self.telemetry = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-observer")
        self.client.username_pw_set(OBSERVER, secret)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("tms/v1/+/status", 1), ("tms/v1/+/telemetry", 0)])
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        serial, kind = message.topic.split("/")[2:4]
        with self.lock:
            if kind == "telemetry":
                self.telemetry += 1
            elif b'"online"' in message.payload:
                self.online.add(serial)
                self.offline.discard(serial)
            else:
                self.offline.add(serial)
                self.online.discard(serial)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tree(process: psutil.Process) -> list[psutil.Process]:
    return [process, *process.children(recursive=True)]


def usage(processes: list[psutil.Process]) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) summed over ``processes``."""
    cpu, rss = 0.0, 0
    for proc in processes:
        try:
            times = proc.cpu_times()
            cpu += times.user + times.system
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return cpu, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terminals", type=int, default=1000)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=5.0, help="status poll interval, s")
    parser.add_argument("--duration", type=float, default=60.0, help="measurement window, s")
    parser.add_argument("--spread", type=float, default=None, help="connect spread, s")
    parser.add_argument("--processes", type=int, default=0, help="0: automatic")
    parser.add_argument("--connect-timeout", type=float, default=600.0)
    args = parser.parse_args()
    limit = raise_fd_limit(args.terminals)
    spread = args.spread if args.spread is not None else max(2.0, args.terminals / 500)

    directory = Path(tempfile.mkdtemp(prefix="tms-bench-simulate-"))
    directory.chmod(0o755)  # Mosquitto runs as user mosquitto when this runs as root
    port = free_port()
    fleet = [(f"BENCH{n:06d}", generate_secret()) for n in range(args.terminals)]
    observer_secret = generate_secret()
    accounts = [BrokerAccount(s, AccountKind.TERMINAL, hash_secret(secret)) for s, secret in fleet]
    accounts.append(BrokerAccount(OBSERVER, AccountKind.INGEST, hash_secret(observer_secret)))
    broker = MosquittoProcess(
        find_binary("mosquitto"), MosquittoFiles(directory / "broker"), "127.0.0.1", port
    )
    broker.prepare()
    broker.write_accounts(accounts)
    broker.start()
    assert broker.process is not None
    credentials = directory / "fleet.json"
    write_fleet_file(credentials, fleet, MqttClientSettings(host="127.0.0.1", port=port))
    observer = Observer(port, observer_secret)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMS_")} | {
        "TMS_SIMULATE_STATUS_POLL_INTERVAL_S": str(args.poll),
        "TMS_SIMULATE_CONNECT_SPREAD_S": str(spread),
        "TMS_SIMULATE_PROCESSES": str(args.processes),
        "TMS_LOG_LEVEL": "WARNING",
    }
    log_path = directory / "simulate.log"
    print(
        f"{args.terminals} terminals, heartbeat {args.heartbeat} s, status poll {args.poll} s, "
        f"connects spread over {spread:.0f} s, open-files limit {limit}; logs in {directory}"
    )
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        simulator = subprocess.Popen(
            [sys.executable, "-m", "tms", "simulate", "--credentials-file", str(credentials),
             "--heartbeat", str(args.heartbeat)],
            cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    sim = psutil.Process(simulator.pid)
    mosq = psutil.Process(broker.process.pid)
    try:
        while len(observer.online) < args.terminals:
            if simulator.poll() is not None:
                raise SystemExit(f"the simulator exited early; see {log_path}")
            if time.monotonic() - started > args.connect_timeout:
                raise SystemExit(
                    f"only {len(observer.online)}/{args.terminals} online after "
                    f"{args.connect_timeout:.0f} s"
                )
            time.sleep(0.2)
        connect_s = time.monotonic() - started
        print(f"all {args.terminals} online after {connect_s:.1f} s (spread {spread:.0f} s)")
        time.sleep(min(10.0, args.heartbeat))  # let connect churn settle
        sim_cpu0, _ = usage(tree(sim))
        mosq_cpu0, _ = usage([mosq])
        beats0, t0 = observer.telemetry, time.monotonic()
        peak_rss = 0
        while time.monotonic() - t0 < args.duration:
            time.sleep(1.0)
            peak_rss = max(peak_rss, usage(tree(sim))[1])
        elapsed = time.monotonic() - t0
        sim_cpu1, sim_rss = usage(tree(sim))
        mosq_cpu1, mosq_rss = usage([mosq])
        beats = observer.telemetry - beats0
        still_online = len(observer.online)
    finally:
        simulator.send_signal(signal.SIGTERM)
        try:
            simulator.wait(120)
        except subprocess.TimeoutExpired:
            simulator.kill()
        observer.close()
        broker.stop()
    sim_core = (sim_cpu1 - sim_cpu0) / elapsed
    mosq_core = (mosq_cpu1 - mosq_cpu0) / elapsed
    n = args.terminals
    print(f"simulator: {len(tree(sim)) if simulator.poll() is None else 'all'} processes stopped")
    print(
        f"simulator  RSS {peak_rss / 2**20:.0f} MB peak = {peak_rss / n / 1024:.1f} KB/terminal; "
        f"CPU {sim_core * 100:.1f}% of a core = {sim_core * 100 / n * 1000:.2f}% per 1,000"
    )
    print(f"mosquitto  RSS {mosq_rss / 2**20:.0f} MB; CPU {mosq_core * 100:.1f}% of a core")
    print(
        f"telemetry  {beats / elapsed:.0f} msg/s seen (expected {n / args.heartbeat:.0f}); "
        f"{still_online}/{n} online at the end of the window"
    )


if __name__ == "__main__":
    main()
