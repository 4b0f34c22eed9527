"""The rendered acl_file enforces exactly what ``broker.acl.is_allowed`` says, on Mosquitto.

Publishing: the MQTT 5 PUBACK says whether Mosquitto allowed each publish.
Subscribing: Mosquitto 2.0 grants every SUBACK and checks read access per message, so
agreement is checked on delivery: a subscriber gets a probe message exactly when its
filter matches the topic and ``is_allowed`` lets the account read that topic; and a
filter ``is_allowed`` accepts delivers every probe it matches. ``$share`` filters are
refused outright (by the TMS plugin) to accounts ``may_join_shared_group`` excludes.

deploy/emqx's authorization query is run on PostgreSQL too: for every account it
returns exactly the grants ``broker.acl`` gives it, with the account's own name in.
"""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import text
from sqlmodel import Session

from broker.acl import GRANTS, OWN, Access, Grant, is_allowed, may_join_shared_group, may_retain
from registry import provisioning
from shared.db import make_engine
from shared.models import AccountKind, Credential
from shared.topics import is_valid_account
from tests.fixtures.broker import MqttProbe, RunningBroker

pytestmark = pytest.mark.integration

ACCOUNTS = [
    (AccountKind.TERMINAL, "TC-1"),
    (AccountKind.TERMINAL, "TC-2"),
    (AccountKind.INGEST, "tms-ingest"),
    (AccountKind.CONSOLE, "tms-console"),
    (AccountKind.SUPPORT_SCRIPT, "support"),
    (AccountKind.SUPPORT_SCRIPT, "support-2"),
]
LEAVES = ["telemetry", "status", "event", "cmd/c1", "cmd-result/c1", "other"]
REQUEST_LEAVES = ["cmd/r1", "reply/r1", "other/r1"]


def _topics_for(username: str) -> list[str]:
    names = ["TC-1", "TC-2", username]
    topics = [f"tms/v1/{n}/{leaf}" for n in dict.fromkeys(names) for leaf in LEAVES]
    scripts = ["support", "support-2", "TC-1", username]
    topics += [
        f"tms/requests/{n}/{leaf}" for n in dict.fromkeys(scripts) for leaf in REQUEST_LEAVES
    ]
    return [*topics, "other/topic", "tms/v1", "$SYS/broker/x"]


FILTERS = [
    "#",
    "tms/v1/#",
    "tms/v1/+/telemetry",
    "tms/v1/+/status",
    "tms/v1/+/event",
    "tms/v1/+/cmd/+",
    "tms/v1/+/cmd-result/+",
    "tms/v1/TC-1/#",
    "tms/v1/TC-1/cmd/+",
    "tms/v1/TC-2/cmd/+",
    "tms/v1/TC-1/telemetry",
    "$share/{group}/tms/v1/+/telemetry",
    "$share/{group}/tms/v1/TC-1/cmd/+",
    "tms/requests/#",
    "tms/requests/+/cmd/+",
    "tms/requests/+/reply/+",
    "tms/requests/support/reply/+",
    "tms/requests/support/cmd/+",
    "$share/{group}/tms/requests/+/cmd/+",
]

# Every topic some account may publish: these are what subscribers can observe.
PROBES = sorted(
    {
        topic
        for kind, username in ACCOUNTS
        for topic in _topics_for(username)
        if is_allowed(kind, username, Access.PUBLISH, topic)
    }
)


@pytest.fixture
def accounts(mosquitto_broker: RunningBroker) -> dict[str, tuple[AccountKind, str]]:
    """username -> (kind, secret) for every account, all provisioned."""
    found = {}
    for kind, username in ACCOUNTS:
        if kind is AccountKind.TERMINAL:
            secret = mosquitto_broker.provision_terminal(username)
        else:
            secret = mosquitto_broker.service_account(kind, username)
        found[username] = (kind, secret)
    return found


def test_publish_matches_is_allowed(
    mosquitto_broker: RunningBroker, accounts: dict[str, tuple[AccountKind, str]]
) -> None:
    disagreements = []
    for username, (kind, secret) in accounts.items():
        client = _connect(mosquitto_broker, kind, username, secret)
        for topic in _topics_for(username):
            expected = is_allowed(kind, username, Access.PUBLISH, topic)
            if client.publish(topic) != expected:
                disagreements.append((username, topic, expected))
        client.close()
    assert disagreements == []


def _connect(broker: RunningBroker, kind: AccountKind, username: str, secret: str) -> MqttProbe:
    client_id = username if kind is AccountKind.TERMINAL else None  # a terminal's is its serial
    client = MqttProbe(broker, username, secret, client_id=client_id)
    assert client.connect()
    return client


def _expected(kind: AccountKind, username: str, topic_filter: str) -> set[str]:
    """The probes this subscription should get, by ``is_allowed``."""
    if topic_filter.startswith("$share/") and not may_join_shared_group(kind):
        return set()
    plain = topic_filter.split("/", 2)[2] if topic_filter.startswith("$share/") else topic_filter
    matching = {t for t in PROBES if mqtt.topic_matches_sub(plain, t)}
    expected = {t for t in matching if is_allowed(kind, username, Access.SUBSCRIBE, t)}
    if is_allowed(kind, username, Access.SUBSCRIBE, topic_filter):
        assert expected == matching, (username, topic_filter)
    return expected


def _deliveries_disagreeing(
    broker: RunningBroker, accounts: dict[str, tuple[AccountKind, str]], template: str
) -> list[tuple[str, str, list[str]]]:
    """Every account subscribes to one filter; every probe is published; compare."""
    clients, expected = {}, {}
    for index, (username, (kind, secret)) in enumerate(accounts.items()):
        # A share group of its own: members of one group split the messages between them.
        topic_filter = template.format(group=f"g{index}")
        clients[username] = _connect(broker, kind, username, secret)
        granted = clients[username].subscribe(topic_filter)
        if topic_filter.startswith("$share/"):
            assert granted is may_join_shared_group(kind), (username, topic_filter)
        expected[username] = (topic_filter, _expected(kind, username, topic_filter))
    for topic in PROBES:
        # Published by the account's own connection: a second one as the same terminal
        # would take over the first's session.
        username = next(u for k, u in ACCOUNTS if is_allowed(k, u, Access.PUBLISH, topic))
        assert clients[username].publish(topic)
    for username, (_, wanted) in expected.items():
        clients[username].wait_for(len(wanted))
        # Mosquitto routes a message before its PUBACK: after this, what has not come
        # was not sent. The filter is one the account may read and nobody publishes to.
        if accounts[username][0] is AccountKind.TERMINAL:
            clients[username].barrier(f"tms/v1/{username}/cmd/barrier")
        else:
            clients[username].barrier("tms/v1/+/cmd-result/barrier")
    disagreements = []
    for username, (topic_filter, wanted) in expected.items():
        got = {m.topic for m in clients[username].drain()}
        if got != wanted:
            disagreements.append((username, topic_filter, sorted(got ^ wanted)))
        clients[username].close()
    return disagreements


def test_delivery_matches_is_allowed(
    mosquitto_broker: RunningBroker, accounts: dict[str, tuple[AccountKind, str]]
) -> None:
    assert len(PROBES) >= 10  # telemetry, status, ... of both terminals and their commands
    disagreements = []
    for template in FILTERS:
        disagreements += _deliveries_disagreeing(mosquitto_broker, accounts, template)
    assert disagreements == []


EMQX_SQL = Path(__file__).resolve().parents[2] / "deploy" / "emqx" / "authn-authz.sql"


def _emqx_retain(grant: Grant) -> str:
    """What the query's retain column should say: 'false' (retained refused) or 'all'."""
    example = grant.topic_filter.replace(OWN, "TC1").replace("+", "x")
    retainable = grant.access is Access.SUBSCRIBE or may_retain(example)
    return "all" if retainable else "false"


def _emqx_authorization_query() -> str:
    """The query as EMQX sends it: each ${username} a bind parameter."""
    sql = EMQX_SQL.read_text()
    query = sql[sql.index("SELECT 'allow'") :].split(";")[0]
    return query.replace("${username}", ":username")


@pytest.mark.parametrize(
    ("kind", "username"),
    [*ACCOUNTS, (AccountKind.SUPPORT_SCRIPT, "ops@example"), (AccountKind.CONSOLE, "c.1")],
)
def test_emqx_authorization_query_grants_what_broker_acl_does(
    database_url: str, kind: AccountKind, username: str
) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        with Session(engine) as session:
            if kind is AccountKind.TERMINAL:
                provisioning.provision_terminal(session, username, "Test Customer", None)
            elif not is_valid_account(username) and kind is AccountKind.SUPPORT_SCRIPT:
                # Refused by provisioning now; one made before names were checked.
                session.add(Credential(username=username, kind=kind.value, salt="", secret_hash=""))
            else:
                provisioning.ensure_service_account(session, kind, username)
            session.commit()
            rows = session.execute(text(_emqx_authorization_query()), {"username": username})
            got = {(row.action, row.topic, row.retain) for row in rows}
    finally:
        engine.dispose()
    fits = is_valid_account(username)
    wanted = {
        (grant.access.value, grant.topic_filter.replace(OWN, username), _emqx_retain(grant))
        for grant in GRANTS[kind]
        if fits or OWN not in grant.topic_filter
    }
    assert got == wanted
