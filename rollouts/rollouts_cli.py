"""``tms rollouts``: run the rollout driver, and start, watch and steer rollouts from
the command line (audited as ``cli:<user>``, like the console's buttons)."""

from __future__ import annotations

import functools
import getpass
import json
import logging
from typing import Any

import click
import psycopg
from sqlalchemy import text
from sqlmodel import Session

from rollouts import manage
from rollouts.driver import Driver, serve
from rollouts.errors import RolloutError
from rollouts.rollout_json import target_from_json
from shared.cli_support import (
    configure_logging,
    database_url_of,
    in_session,
    settings_of,
    stop_on_signals,
)
from shared.db import libpq_url

log = logging.getLogger(__name__)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _run(ctx: click.Context, work: Any) -> Any:
    try:
        return in_session(ctx, work)
    except RolloutError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def rollouts() -> None:
    """Staged firmware rollouts: the driver, and the rollouts themselves."""


@rollouts.command("run")
@click.option("--tick", "tick_s", type=float, default=1.0, show_default=True,
              help="Seconds between looks at each rollout, at the longest.")  # fmt: skip
@click.pass_context
def run(ctx: click.Context, tick_s: float) -> None:
    """Run the rollout driver until SIGTERM or Ctrl-C."""
    configure_logging()
    settings = settings_of(ctx)
    url = libpq_url(database_url_of(ctx, open_stopped=False))
    # A wrong URL or password is one line now; once running, outages are retried.
    psycopg.connect(url, connect_timeout=10).close()
    firmware = settings.firmware

    def driver_of(conn: psycopg.Connection[Any]) -> Driver:
        return Driver(
            conn,
            download_url=functools.partial(firmware.download_url_of, settings.console),
            mirror_url=firmware.mirror_url_of,
        )

    log.info("rollout driver starting")
    serve(url, driver_of, stop_on_signals(), tick_s=tick_s)
    log.info("rollout driver stopped")


@rollouts.command("create")
@click.argument("version")
@click.option("--name", required=True, help="What the team calls it.")
@click.option(
    "--waves",
    "wave_spec",
    default="1,10,50,100",
    show_default=True,
    help="Cumulative percentages ('1,10,100'), or group sizes ('10,100,*').",
)
@click.option(
    "--target",
    "target_json",
    default="{}",
    show_default=True,
    help='JSON: {"customers": [1], "stores": [], "models": [], "min_version": '
    '"1.0", "max_version": "2.0", "tags": [], "exclude_tags": []}.',
)
@click.option(
    "--policy",
    "policy_json",
    default="{}",
    show_default=True,
    help='JSON: {"success_threshold_pct": 95, "error_threshold_pct": 5, '
    '"max_concurrent": 100, "rate_per_minute": 600, "window": '
    '"Mon-Fri 02:00-05:00", "approve_each_wave": false, ...}.',
)
@click.option("--dry-run", is_flag=True, help="Print the waves and exclusions; start nothing.")
@click.pass_context  # fmt: skip
def create(
    ctx: click.Context, version: str, name: str, wave_spec: str, target_json: str,
    policy_json: str, dry_run: bool,
) -> None:  # fmt: skip
    """Roll released firmware VERSION out in waves."""
    target = target_from_json(_json(target_json, "--target"))
    policy = _json(policy_json, "--policy")
    if dry_run:
        plan = _run(ctx, lambda s: manage.plan(s, version, target, wave_spec))
        click.echo(f"{plan.total} terminals in {len(plan.waves)} waves: {list(plan.wave_sizes)}")
        for why, count in sorted(plan.excluded.items()):
            click.echo(f"  left out, {why}: {count}")
        return
    rollout_id = _run(
        ctx,
        lambda s: manage.create(
            s,
            name=name,
            version=version,
            target=target,
            policy=policy,
            wave_spec=wave_spec,
            actor=_actor(),
        ),  # fmt: skip
    )
    click.echo(f"Rollout {rollout_id} started; `tms rollouts show {rollout_id}` follows it.")


@rollouts.command("list")
@click.pass_context
def list_rollouts(ctx: click.Context) -> None:
    """Every rollout, newest first."""

    def work(session: Session) -> list[Any]:
        return list(
            session.execute(
                text(
                    "SELECT r.id, r.name, f.version, r.state, r.created_at,"
                    " (SELECT count(*) FROM update_task u WHERE u.rollout_id = r.id),"
                    " (SELECT count(*) FROM update_task u WHERE u.rollout_id = r.id"
                    "  AND u.state = 'succeeded')"
                    " FROM rollout r JOIN firmware f ON f.id = r.firmware_id ORDER BY r.id DESC"
                )
            )
        )

    rows = _run(ctx, work)
    if not rows:
        click.echo("No rollout yet: `tms rollouts create VERSION --name NAME`.")
        return
    click.echo(f"{'ID':>5}  {'STATE':<10} {'VERSION':<16} {'UPDATED':>15}  NAME")
    for rid, name, version, state, _created, total, done in rows:
        click.echo(f"{rid:>5}  {state:<10} {version:<16} {f'{done}/{total}':>15}  {name}")


@rollouts.command("show")
@click.argument("rollout_id", type=int)
@click.pass_context
def show(ctx: click.Context, rollout_id: int) -> None:
    """One rollout: its state, and its tasks per wave and state."""

    def work(session: Session) -> tuple[Any, list[Any]]:
        head = session.execute(
            text(
                "SELECT r.name, f.version, r.state, r.halt_reason, r.note FROM rollout r"
                " JOIN firmware f ON f.id = r.firmware_id WHERE r.id = :id"
            ),
            {"id": rollout_id},
        ).first()
        if head is None:
            raise manage.RolloutNotFound(f"no rollout {rollout_id}")
        counts = session.execute(
            text(
                "SELECT wave, state, count(*) FROM update_task WHERE rollout_id = :id"
                " GROUP BY wave, state ORDER BY wave, state"
            ),
            {"id": rollout_id},
        ).all()
        return head, list(counts)

    head, counts = _run(ctx, work)
    name, version, state, halt_reason, note = head
    click.echo(f"Rollout {rollout_id} ({name}): firmware {version}, {state}")
    if halt_reason:
        click.echo(f"  halted: {halt_reason}")
    if note:
        click.echo(f"  {note}")
    for wave, task_state, count in counts:
        click.echo(f"  wave {wave}: {task_state} {count}")


def _steer(ctx: click.Context, rollout_id: int, verb: str, work: Any) -> None:
    _run(ctx, work)
    click.echo(f"Rollout {rollout_id} {verb}.")


@rollouts.command("pause")
@click.argument("rollout_id", type=int)
@click.pass_context
def pause(ctx: click.Context, rollout_id: int) -> None:
    """Start nothing more; what runs finishes."""
    _steer(ctx, rollout_id, "paused", lambda s: manage.pause(s, rollout_id, _actor()))


@rollouts.command("resume")
@click.argument("rollout_id", type=int)
@click.option(
    "--policy",
    "policy_json",
    default="{}",
    help="JSON of policy fields to change, e.g. a higher error threshold.",
)
@click.pass_context  # fmt: skip
def resume(ctx: click.Context, rollout_id: int, policy_json: str) -> None:
    """Run a paused or halted rollout again."""
    changes = _json(policy_json, "--policy")
    _steer(ctx, rollout_id, "resumed", lambda s: manage.resume(s, rollout_id, _actor(), changes))


@rollouts.command("cancel")
@click.argument("rollout_id", type=int)
@click.pass_context
def cancel(ctx: click.Context, rollout_id: int) -> None:
    """Stop it: terminals not started are left alone; installs under way finish."""
    _steer(ctx, rollout_id, "cancelled", lambda s: manage.cancel(s, rollout_id, _actor()))


@rollouts.command("approve")
@click.argument("rollout_id", type=int)
@click.argument("wave", type=int)
@click.pass_context
def approve(ctx: click.Context, rollout_id: int, wave: int) -> None:
    """Let WAVE of a rollout that asks for approval open."""
    _steer(
        ctx, rollout_id, f"wave {wave} approved",
        lambda s: manage.approve(s, rollout_id, wave, _actor()),
    )  # fmt: skip


def _json(text_value: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text_value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, dict):
        raise click.BadParameter("a JSON object", param_hint=option)
    return value
