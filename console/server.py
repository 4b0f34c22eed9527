"""Serving the console with waitress, stoppable from SIGTERM or from another thread."""

from __future__ import annotations

import logging

from flask import Flask
from waitress import wasyncore
from waitress.server import create_server

log = logging.getLogger(__name__)


class ConsoleServer:
    """One waitress server bound at construction; ``serve()`` blocks until stopped.

    SIGTERM/Ctrl-C: a handler raising SystemExit ends the loop (waitress catches it).
    Another thread (tests): ``stop()`` runs the close in the server's own loop thread,
    because waitress' socket map is not safe to change from outside it.
    """

    def __init__(self, app: Flask, host: str, port: int, *, threads: int = 8) -> None:
        # waitress deletes X-Forwarded-* by default. Behind trusted proxies ([console]
        # proxy_hops) the app's ProxyFix needs them and reads only the proxies' values
        # (console.app.trust_proxies); without, they stay deleted before the app.
        behind_proxies = bool(app.config.get("TMS_PROXY_HOPS"))
        self._server = create_server(
            app, host=host, port=port, threads=threads, ident="tms-console",
            clear_untrusted_proxy_headers=not behind_proxies,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://{self._server.effective_host}:{self._server.effective_port}"

    def serve(self) -> None:
        log.info("console listening on %s", self.url)
        try:
            self._server.run()
        finally:
            # Lets in-flight requests finish (up to 5 s), then closes every socket.
            self._server.task_dispatcher.shutdown()
            wasyncore.close_all(self._server._map)
            log.info("console stopped")

    def stop(self) -> None:
        self._server.trigger.pull_trigger(lambda: wasyncore.close_all(self._server._map))
