"""The console's optional IP allowlist: which peer addresses may reach it at all."""

from __future__ import annotations

import time
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address

from flask import Flask, abort, current_app, request

from console.db import request_session
from shared import audit_trail

# Left open whatever the list says: the supervisor's and a load balancer's probe.
OPEN_PATHS = frozenset({"/healthz"})
# Terminals' agents fetching firmware from every store's address: their own credentials
# decide (console.firmware_download), the list of people's networks does not.
OPEN_PREFIXES = ("/agent/v1/",)
# One audit line per refused address per this many seconds: a scan from outside the
# list is recorded, but cannot fill the audit trail.
AUDIT_EVERY_S = 60.0

Network = IPv4Network | IPv6Network


def address_allowed(address: str | None, networks: Sequence[Network]) -> bool:
    """True for any address when the list is empty; else only inside one of ``networks``.

    An address that is missing or does not parse is refused (pure: no Flask).
    """
    if not networks:
        return True
    if not address:
        return False
    try:
        peer = ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(peer, IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped  # ::ffff:10.1.2.3 is 10.1.2.3 to a dual-stack socket
    return any(peer.version == net.version and peer in net for net in networks)


class _Allowlist:
    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = tuple(networks)
        self._audited: dict[str, float] = {}

    def check(self) -> None:
        if (
            request.path in OPEN_PATHS
            or request.path.startswith(OPEN_PREFIXES)
            or address_allowed(request.remote_addr, self.networks)
        ):
            return
        address = request.remote_addr or "unknown"
        now = time.monotonic()
        if now - self._audited.get(address, -AUDIT_EVERY_S) >= AUDIT_EVERY_S:
            self._audited[address] = now
            if len(self._audited) > 10_000:  # a bounded memory of who was refused
                self._audited.clear()
            try:
                db = request_session()
                audit_trail.record(
                    db,
                    "anonymous",
                    "access.refused",
                    request.path[:200],
                    {"reason": "address not in allowed_networks", "method": request.method},
                    address[:64],
                )
                db.commit()
            except Exception:  # the refusal stands even if it cannot be written down
                current_app.logger.exception("could not audit a refused address")
        abort(403, description="Your address may not use this console.")


def init_app(app: Flask, networks: Sequence[Network]) -> None:
    """Refuse peers outside ``networks`` before any other request hook runs."""
    if networks:
        app.before_request_funcs.setdefault(None, []).insert(0, _Allowlist(networks).check)
