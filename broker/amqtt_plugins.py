"""amqtt auth and topic plugins: thin shells over the account cache and ``is_allowed``.

amqtt builds its plugins from dotted names in its configuration; the broker service
then hands each one the shared ``AccountCache`` (and the auth plugin the
``LoginThrottle``) with ``attach``. Until attached they refuse everything, so a
mistake in wiring fails closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from amqtt.contexts import Action as AmqttAction
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session as AmqttSession

from broker.acl import Access, client_id_allowed, is_allowed
from broker.login_throttle import LoginThrottle, login_keys
from registry.provisioning import BrokerAccount
from shared.credentials import verify_secret

log = logging.getLogger(__name__)

AUTH_PLUGIN = "broker.amqtt_plugins.DatabaseAuthPlugin"
TOPIC_PLUGIN = "broker.amqtt_plugins.DatabaseTopicPlugin"


class AccountCache:
    """The accounts the broker accepts, by username; replaced whole on every sync."""

    def __init__(self) -> None:
        self._accounts: dict[str, BrokerAccount] = {}

    def replace(self, accounts: Iterable[BrokerAccount]) -> None:
        self._accounts = {account.username: account for account in accounts}

    def get(self, username: str | None) -> BrokerAccount | None:
        return self._accounts.get(username) if username else None

    def __len__(self) -> int:
        return len(self._accounts)


def secret_still_valid(cache: AccountCache, username: str | None, secret: str | None) -> bool:
    """Would this session's login still be accepted now (not revoked, not rotated)?"""
    account = cache.get(username)
    return account is not None and secret is not None and verify_secret(secret, account.secret)


def _password(session: AmqttSession) -> str | None:
    password = session.password
    if isinstance(password, bytes | bytearray):
        return bytes(password).decode("utf-8", errors="replace")
    return password


class DatabaseAuthPlugin(BaseAuthPlugin):
    """Username + secret against the cached credential hashes, with brute-force throttling."""

    cache: AccountCache | None = None
    throttle: LoginThrottle | None = None

    def attach(self, cache: AccountCache, throttle: LoginThrottle) -> None:
        self.cache = cache
        self.throttle = throttle

    async def authenticate(self, *, session: AmqttSession) -> bool | None:
        if self.cache is None or self.throttle is None:
            log.error("auth plugin used before the broker service attached it: refusing")
            return False
        keys = login_keys(session.client_id, session.remote_address)
        verdict = self.throttle.before_attempt(keys)
        if verdict.refused:
            log.warning(
                "login refused: %s is locked out after repeated failures (user %r, from %s)",
                verdict.locked_key,
                session.username,
                session.remote_address,
            )
            return False
        if verdict.delay_s:
            await asyncio.sleep(verdict.delay_s)  # tarpit: this connection only
        if secret_still_valid(self.cache, session.username, _password(session)):
            return self._client_id_ok(self.cache, session, keys)
        for key in self.throttle.record_failure(keys):
            stats = self.throttle.stats
            log.warning(
                "too many failed logins for %s: refused for %.0f s (failures=%d lockouts=%d)",
                key,
                self.throttle.policy.lockout_s,
                stats.failures,
                stats.lockouts,
            )
        return False

    def _client_id_ok(
        self, cache: AccountCache, session: AmqttSession, keys: tuple[str, ...]
    ) -> bool:
        assert self.throttle is not None
        account = cache.get(session.username)
        if account is None:
            return False

        def is_account(name: str) -> bool:
            return cache.get(name) is not None

        if not client_id_allowed(account.kind, account.username, session.client_id, is_account):
            log.warning(
                "login of %s with client id %r refused: a client id that names an account "
                "is that account's alone, and a terminal's is its serial",
                account.username,
                session.client_id,
            )
            return False
        self.throttle.record_success(keys)
        return True


_ACCESS = {
    AmqttAction.PUBLISH: Access.PUBLISH,
    AmqttAction.SUBSCRIBE: Access.SUBSCRIBE,
    # Delivery is checked again with the read rules, so nothing slips past a
    # subscription made before a change of rules.
    AmqttAction.RECEIVE: Access.SUBSCRIBE,
}


class DatabaseTopicPlugin(BaseTopicPlugin):
    """``is_allowed`` for every publish, subscribe and delivery."""

    cache: AccountCache | None = None

    def attach(self, cache: AccountCache) -> None:
        self.cache = cache

    async def topic_filtering(
        self,
        *,
        session: AmqttSession | None = None,
        topic: str | None = None,
        action: AmqttAction | None = None,
    ) -> bool | None:
        if self.cache is None or session is None or topic is None or action is None:
            return False
        account = self.cache.get(session.username)
        if account is None:
            return False
        access = _ACCESS.get(action)
        return access is not None and is_allowed(account.kind, account.username, access, topic)
