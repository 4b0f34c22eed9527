"""The processes `tms up` runs besides PostgreSQL, in start-up order, and what each is told.

Each part learns where the others are, and its own account, from its environment; the
same environment serves every restart (the service secrets stay valid for as long as
`tms up` runs: they are rotated only when it starts).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.platform_status import STATUS_FILE_ENV
from shared.ports import port_accepts
from shared.settings import Settings
from tms.children import Child, child_env, http_ok

INGEST_ACCOUNT = "tms-ingest"
CONSOLE_ACCOUNT = "tms-console"


@dataclass(frozen=True)
class UpOptions:
    simulate: int = 0
    heartbeat_s: float = 10.0
    fault_rate: float = 0.0


@dataclass(frozen=True)
class ServiceSecrets:
    """Fresh MQTT secrets of this run's service accounts, and the console's session key."""

    ingest_mqtt: str
    console_mqtt: str
    console_key: str


def service_children(
    settings: Settings, database_url: str, secrets: ServiceSecrets, status_file: Path
) -> list[Child]:
    """The broker, ingest, the console and the command sender, in the order they start."""
    s = settings
    data_dir = s.paths.data_dir
    logs = data_dir / "logs"
    mqtt = {"HOST": s.broker.host, "PORT": str(s.broker.port)}
    common = {"TMS_DATABASE_URL": database_url, "TMS_DATA_DIR": str(data_dir)}
    metrics = f"http://{s.ingest.metrics_host}:{s.ingest.metrics_port}/healthz"
    console_url = f"http://{s.console.host}:{s.console.port}/healthz"

    def metrics_ready() -> bool:
        # /healthz answers 200 once ingest is subscribed and PostgreSQL answers.
        return not s.ingest.metrics_port or http_ok(metrics)

    broker_env = {"TMS_BROKER_PORT": str(s.broker.port), "TMS_BROKER_HOST": s.broker.host}
    ingest_env = {
        **{f"TMS_INGEST_MQTT_{k}": v for k, v in mqtt.items()},
        "TMS_INGEST_MQTT_USERNAME": INGEST_ACCOUNT,
        "TMS_INGEST_MQTT_PASSWORD": secrets.ingest_mqtt,
        "TMS_INGEST_METRICS_HOST": s.ingest.metrics_host,
        "TMS_INGEST_METRICS_PORT": str(s.ingest.metrics_port),
    }
    # The command sender publishes as the console's account.
    console_mqtt_env = {
        **{f"TMS_CONSOLE_MQTT_{k}": v for k, v in mqtt.items()},
        "TMS_CONSOLE_MQTT_USERNAME": CONSOLE_ACCOUNT,
        "TMS_CONSOLE_MQTT_PASSWORD": secrets.console_mqtt,
    }
    console_env = {
        **console_mqtt_env,
        "TMS_CONSOLE_SECRET_KEY": secrets.console_key,
        "TMS_CONSOLE_HOST": s.console.host,
        "TMS_CONSOLE_PORT": str(s.console.port),
        # For /healthz: the parts' states, as the supervisor writes them.
        STATUS_FILE_ENV: str(status_file),
    }
    return [
        Child(
            "broker",
            ["broker"],
            child_env({**common, **broker_env}),
            logs / "broker.log",
            ready=lambda: port_accepts(s.broker.host, s.broker.port),
        ),
        Child(
            "ingest",
            ["ingest"],
            child_env({**common, **ingest_env}),
            logs / "ingest.log",
            ready=metrics_ready,
        ),
        Child(
            "console",
            ["console"],
            child_env({**common, **console_env}),
            logs / "console.log",
            ready=lambda: http_ok(console_url),
        ),
        Child(
            "commands",
            ["commands"],
            child_env({**common, **console_mqtt_env}),
            logs / "commands.log",
            ready_log_line="connected to the broker",
        ),
        Child(
            "rollouts",
            ["rollouts", "run"],
            # The console's address: the firmware commands name its download URL.
            child_env(
                {
                    **common,
                    "TMS_CONSOLE_HOST": s.console.host,
                    "TMS_CONSOLE_PORT": str(s.console.port),
                }
            ),
            logs / "rollouts.log",
            ready_log_line="rollout driver starting",
        ),
    ]


def simulator_child(data_dir: Path, options: UpOptions, credentials: Path) -> Child:
    """`tms simulate` with the fleet's credentials file (SIM000001...)."""
    return Child(
        "simulator",
        [
            "simulate",
            "--terminals",
            str(options.simulate),
            "--credentials-file",
            str(credentials),
            "--heartbeat",
            str(options.heartbeat_s),
            "--fault-rate",
            str(options.fault_rate),
        ],
        child_env({"TMS_DATA_DIR": str(data_dir)}),
        data_dir / "logs" / "simulator.log",
    )
