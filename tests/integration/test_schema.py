"""The alembic migrations build the schema the models describe."""

import psycopg
import pytest
from sqlalchemy import inspect
from sqlmodel import SQLModel

from shared import schema
from shared.db import make_engine

pytestmark = pytest.mark.integration


def test_migrations_create_every_model_table(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(SQLModel.metadata.tables) <= tables
    assert schema.current_revision(database_url) is not None


def test_upgrade_is_idempotent_and_keeps_data(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO customer (name) VALUES ('Keep Me Ltd')")
    schema.upgrade(database_url)
    with psycopg.connect(database_url) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM customer")]
    assert names == ["Keep Me Ltd"]


def test_credential_changes_notify_the_broker_service(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN tms_credentials")
        with psycopg.connect(database_url, autocommit=True) as writer:
            writer.execute(
                "INSERT INTO credential (username, kind, salt, secret_hash)"
                " VALUES ('svc', 'ingest', 's', 'h')"
            )
        notices = list(listener.notifies(timeout=30, stop_after=1))
    assert [n.channel for n in notices] == ["tms_credentials"]


def test_models_and_migrations_describe_the_same_schema(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            differences = compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()

    # Partitions of telemetry and the terminal log are created by the migrations and
    # by retention, not declared as models.
    def is_partition_detail(difference: tuple) -> bool:  # type: ignore[type-arg]
        kind, item = difference[0], difference[1]
        table = getattr(item, "table", item)
        return kind in {"remove_table", "remove_index"} and table.name.startswith(
            ("telemetry_y", "telemetry_default", "terminal_log_y", "terminal_log_default")
        )

    # Alembic cannot compare an expression index (PostgreSQL rewrites the expression):
    # the same name both removed and added is that, not a difference. Its definition is
    # checked against the database below.
    def names(kind: str) -> set[str]:
        return {d[1].name for d in differences if d[0] == kind}

    twins = names("remove_index") & names("add_index")
    remaining = [
        d
        for d in differences
        if not is_partition_detail(d)
        and not (d[0] in {"remove_index", "add_index"} and d[1].name in twins)
    ]
    assert remaining == [], "\n".join(repr(d) for d in remaining)


def test_the_terminal_lists_order_index_matches_the_query(database_url: str) -> None:
    """The list orders by shared.models.ATTENTION_RANK_SQL; the index must hold the
    same expression, or PostgreSQL sorts 100,000 rows for each page."""
    from shared.models import ATTENTION_RANK_SQL

    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TEMP TABLE probe (LIKE terminal)")
        conn.execute(f"CREATE INDEX probe_rank ON probe (({ATTENTION_RANK_SQL}), serial)")
        rows = conn.execute(
            "SELECT indexname, regexp_replace(indexdef, '^.* USING ', '') FROM pg_indexes"
            " WHERE indexname IN ('ix_terminal_attention', 'probe_rank')"
        ).fetchall()
    definitions = {name: definition for name, definition in rows}
    assert definitions["ix_terminal_attention"] == definitions["probe_rank"]
