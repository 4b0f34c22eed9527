"""The production files in deploy/ checked by real validators, each shown to catch a break.

systemd units: ``systemd-analyze verify``. The Compose file: Debian's ``docker-compose``
1.29 (``config`` validates the schema and interpolation without a Docker daemon). The
Kubernetes manifests: Kubernetes' own OpenAPI-derived JSON schemas, offline, from the
kubernetes-validate package. Integration tests: they run tools that scripts/bootstrap
--test installs, not pure code.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from shared.errors import SettingsError
from shared.settings import Settings, load_settings

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"
# The oldest Kubernetes minor the manifests are meant for (CronJob timeZone, policy/v1 ...).
KUBERNETES_VERSION = "1.31.0"
# What compose refuses to start without; env.example lists them with empty values.
REQUIRED = {
    "POSTGRES_PASSWORD",
    "TMS_CONSOLE_SECRET_KEY",
    "CONSOLE_HOSTNAME",
    "CONSOLE_TLS",
    "BROKER_HOSTNAME",
}
EXAMPLE_VALUES = {
    "POSTGRES_PASSWORD": "0f" * 16,
    "TMS_CONSOLE_SECRET_KEY": "a1" * 16,
    "CONSOLE_HOSTNAME": "tms.example.net",
    "CONSOLE_TLS": "internal",
    "BROKER_HOSTNAME": "mqtt.example.net",
}
ONE_SHOTS = {"db-upgrade", "setup"}
# Secrets the manifests reference by name; deploy/k8s/README.md says how to make each.
K8S_SECRETS = {
    "tms-database",
    "tms-console",
    "tms-mqtt-ingest",
    "tms-mqtt-console",
    "tms-broker-tls",
    "tms-console-tls",
    "tms-firmware-signing-key",
    "emqx-db",
    "emqx-node",
}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/bootstrap --test")
    return found


def setting_env_names() -> set[str]:
    """Every TMS_* variable shared.settings reads (TMS_<SECTION>_<KEY>, nested sections too)."""
    names = {"TMS_CONFIG", "TMS_DATA_DIR"}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}_")
            else:
                names.add(f"{prefix}{name.upper()}")

    for section, field in Settings.model_fields.items():
        assert isinstance(field.annotation, type)
        walk(field.annotation, f"TMS_{section.upper()}_")
    return names


# --- systemd -----------------------------------------------------------------------


def verify_units(directory: Path) -> subprocess.CompletedProcess[str]:
    units = sorted(str(p) for p in directory.iterdir() if p.suffix in (".service", ".timer"))
    return subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def installable_units(target: Path) -> Path:
    """The units with ExecStart pointing at this checkout's `tms`.

    verify fails a unit whose ExecStart binary does not exist, and /opt/tms is where
    production installs TMS, not where the tests run. Nothing else is changed: verify
    does not read EnvironmentFile= or look up User=, so the units are checked as shipped.
    """
    target.mkdir()
    here = Path(sys.executable).parent / "tms"
    assert here.is_file(), f"{here} missing: the venv has no tms command"
    for unit in SYSTEMD.iterdir():
        text = unit.read_text()
        if unit.suffix == ".service":
            assert "ExecStart=/opt/tms/.venv/bin/tms " in text, unit.name
        (target / unit.name).write_text(text.replace("/opt/tms/.venv/bin/tms", str(here)))
    return target


def test_systemd_units_verify_without_a_warning(tmp_path: Path) -> None:
    units = installable_units(tmp_path / "units")
    result = verify_units(units)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    named = [line for line in output.splitlines() if str(units) in line or "tms-" in line]
    assert named == [], output


def test_systemd_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    # An unknown key is only a warning with exit 0: the test above must read the output.
    units = installable_units(tmp_path / "units")
    broken = units / "tms-ingest.service"
    broken.write_text(broken.read_text().replace("Restart=on-failure", "Restrat=on-failure"))
    result = verify_units(units)
    assert "Unknown key 'Restrat'" in result.stdout + result.stderr


# --- Docker Compose ----------------------------------------------------------------


def compose_config(
    tmp_path: Path, env: dict[str, str], compose_file: Path = COMPOSE
) -> subprocess.CompletedProcess[str]:
    # An empty --env-file: a developer's deploy/compose/.env must not make this pass.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return subprocess.run(
        [
            tool("docker-compose"),
            "--project-directory",
            str(COMPOSE.parent),
            "-f",
            str(compose_file),
            "--env-file",
            str(empty),
            "config",
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def resolved_compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    result = compose_config(tmp_path_factory.mktemp("compose"), EXAMPLE_VALUES)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def test_compose_file_is_valid_and_wires_the_parts(resolved_compose: dict[str, Any]) -> None:
    services = resolved_compose["services"]
    assert set(services) == {
        *ONE_SHOTS,
        *{"postgres", "broker", "ingest", "commands", "rollouts", "console", "caddy", "backup"},
    }
    published = {
        name: sorted((p["published"], p.get("protocol", "tcp")) for p in s.get("ports", []))
        for name, s in services.items()
        if s.get("ports")
    }
    # PostgreSQL, ingest and the console are reachable only on the compose network.
    assert published == {
        "broker": [(8883, "tcp")],
        "caddy": [(80, "tcp"), (443, "tcp"), (443, "udp")],
    }
    for name, service in services.items():
        expected = "no" if name in ONE_SHOTS else "unless-stopped"
        assert service.get("restart", "no") == expected, name
    for name in ("postgres", "broker", "ingest", "console"):
        assert "healthcheck" in services[name], name
    url = services["ingest"]["environment"]["TMS_DATABASE_URL"]
    assert url == f"postgresql://tms:{EXAMPLE_VALUES['POSTGRES_PASSWORD']}@postgres:5432/tms"
    assert services["setup"]["depends_on"]["db-upgrade"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["broker"]["depends_on"]["setup"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["db-upgrade"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_sets_only_real_tms_settings(resolved_compose: dict[str, Any]) -> None:
    # A misspelt TMS_* variable is silently ignored by TMS: catch it here.
    known = setting_env_names()
    for name, service in resolved_compose["services"].items():
        used = {key for key in service.get("environment", {}) if key.startswith("TMS_")}
        assert used <= known, (name, used - known)
    broker = resolved_compose["services"]["broker"]["environment"]
    assert broker["TMS_BROKER_TLS_PORT"] == "8883"
    # The services trust the broker's private CA and reach it with TLS.
    for name, prefix in (("ingest", "TMS_INGEST_MQTT"), ("commands", "TMS_CONSOLE_MQTT")):
        environment = resolved_compose["services"][name]["environment"]
        assert environment[f"{prefix}_PORT"] == "8883", name
        assert environment[f"{prefix}_TLS_CA"] == "/etc/tms/certs/ca.pem", name


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_a_required_value(tmp_path: Path, missing: str) -> None:
    unset = {k: v for k, v in EXAMPLE_VALUES.items() if k != missing}
    result = compose_config(tmp_path, unset)
    assert result.returncode != 0
    assert missing in result.stderr
    # Empty counts as unset: env.example ships every one of them empty.
    result = compose_config(tmp_path, {**EXAMPLE_VALUES, missing: ""})
    assert result.returncode != 0
    assert missing in result.stderr


def test_required_values_have_no_default_and_are_listed_empty_in_env_example() -> None:
    lines = COMPOSE.read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert required == REQUIRED
    for name in REQUIRED:
        assert not re.search(rf"\$\{{{name}:?-", text), f"{name} has a default"
    example = (DEPLOY / "compose" / "env.example").read_text()
    listed = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    assert set(listed) == REQUIRED
    assert all(value == "" for value in listed.values()), listed


def test_compose_validator_rejects_an_unknown_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        COMPOSE.read_text().replace(
            '    command: ["tms", "ingest"]', '    comand: ["tms", "ingest"]'
        )
    )
    result = compose_config(tmp_path, EXAMPLE_VALUES, broken)
    assert result.returncode != 0
    assert "comand" in result.stderr


# --- Kubernetes ----------------------------------------------------------------------


def manifests() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path.name, document


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in manifests():
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            yield doc["metadata"]["name"], spec["template"]["spec"]


def test_kubernetes_manifests_match_the_kubernetes_schemas() -> None:
    kinds = set()
    problems = []
    for name, doc in manifests():
        kinds.add((doc["kind"], doc["metadata"]["name"]))
        try:
            # strict: an unknown field anywhere is an error, not ignored.
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert problems == []
    assert {
        ("StatefulSet", "emqx"),
        ("Service", "emqx-headless"),
        ("ConfigMap", "emqx-config"),
        ("StatefulSet", "tms-ingest"),
        ("Deployment", "tms-console"),
        ("Service", "tms-console"),
        ("Ingress", "tms-console"),
        ("Deployment", "tms-commands"),
        ("Deployment", "tms-rollouts"),
        ("Job", "tms-db-upgrade"),
    } <= kinds


def test_the_schema_check_rejects_a_broken_manifest() -> None:
    console = next(
        d
        for _, d in manifests()
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "tms-console"
    )
    misspelt = copy.deepcopy(console)
    host = misspelt["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert host["name"] == "TMS_CONSOLE_HOST"
    host["valu"] = host.pop("value")
    wrong_type = copy.deepcopy(console)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_emqx_config_map_carries_deploy_emqx_unchanged() -> None:
    config = next(d for _, d in manifests() if d["metadata"]["name"] == "emqx-config")
    expected = (DEPLOY / "emqx" / "emqx-tms.hocon").read_text()
    assert config["data"]["emqx-tms.hocon"] == expected, (
        "deploy/k8s/emqx-config.yaml differs from deploy/emqx/emqx-tms.hocon: paste it again"
    )


def test_secrets_are_referenced_by_name_never_stored() -> None:
    text = "\n".join(p.read_text() for p in sorted(K8S.glob("*.yaml")))
    assert all(doc["kind"] != "Secret" for _, doc in manifests())
    referenced = set(re.findall(r"secretKeyRef:\s+name: ([a-z0-9-]+)", text))
    referenced |= set(re.findall(r"secretName: ([a-z0-9-]+)", text))
    assert referenced == K8S_SECRETS
    readme = (K8S / "README.md").read_text()
    assert [name for name in sorted(K8S_SECRETS) if name not in readme] == []


def test_tms_pods_get_no_service_links_and_only_real_settings() -> None:
    # Kubernetes sets TMS_CONSOLE_PORT=tcp://<ip>:8000 for a Service named tms-console;
    # TMS would read it as its own port and refuse to start.
    with pytest.raises(SettingsError):
        load_settings(env={"TMS_CONSOLE_PORT": "tcp://10.0.0.1:8000"})
    known = setting_env_names()
    config = next(d for _, d in manifests() if d["metadata"]["name"] == "tms-env")
    assert {k for k in config["data"] if k.startswith("TMS_")} <= known
    for name, spec in pod_specs():
        for container in spec.get("initContainers", []) + spec["containers"]:
            used = {e["name"] for e in container.get("env", []) if e["name"].startswith("TMS_")}
            assert used <= known, (name, used - known)
            if container["image"].startswith("registry.example.net/tms:"):
                assert spec.get("enableServiceLinks") is False, name
                assert spec["securityContext"]["runAsUser"] == 10001, name


def test_ingest_pods_share_the_stream_under_their_own_client_ids() -> None:
    ingest = next(
        d
        for _, d in manifests()
        if d["metadata"]["name"] == "tms-ingest" and d["kind"] == "StatefulSet"
    )
    assert ingest["spec"]["replicas"] >= 2
    env = {e["name"]: e for e in ingest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TMS_INGEST_SHARED_GROUP"]["value"] == "ingest"
    assert env["TMS_INGEST_CLIENT_ID"]["value"] == "$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    console = next(
        d
        for _, d in manifests()
        if d["metadata"]["name"] == "tms-console" and d["kind"] == "Deployment"
    )
    assert console["spec"]["replicas"] >= 2


# --- the image -----------------------------------------------------------------------


def test_dockerfile_builds_from_this_repository_and_runs_as_tms() -> None:
    dockerfile = DEPLOY / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    assert set(re.findall(r"^FROM (\S+)", text, re.M)) == {"python:3.11-slim-bookworm"}
    # The uid the Kubernetes manifests run as (runAsUser above).
    assert "--uid 10001" in text
    assert re.findall(r"^USER (\S+)", text, re.M) == ["tms:tms"]
    root = DEPLOY.parent
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        *sources, _ = line.split()
        for source in sources:
            assert (root / source).exists(), source
    for script in ("tms-entrypoint", "tms-setup"):
        path = DEPLOY / "docker" / script
        assert path.stat().st_mode & 0o111, f"{script} is not executable"
        subprocess.run(["sh", "-n", str(path)], check=True)
