"""``castway origin``: a stateless HLS origin + control API replica."""

from __future__ import annotations

import logging

from castway.net import HttpLimits, bind_socket
from castway.settings import Settings
from launch.http_app import create_platform_app
from launch.http_server import HttpServer, http_connections
from launch.process import run_async, start_process, wait_for_stop_signal
from launch.services import Services

logger = logging.getLogger(__name__)


def run_origin(settings: Settings) -> int:
    """``castway origin``: a stateless HLS origin + control API replica."""
    start_process(settings)

    async def main() -> None:
        services = Services.open(settings)
        try:
            app = create_platform_app(settings, catalog=services.catalog, live=services.live,
                                  storage=services.storage, registry=services.registry)
            http = HttpServer(app, bind_socket(settings.host, settings.http_port),
                              HttpLimits.from_settings(settings))
            await http.start()
            services.runtime_metrics().watch("http", http_connections(http))
            logger.info("origin up", extra={"http_port": http.port})
            try:
                await wait_for_stop_signal()
            finally:
                await http.stop()
        finally:
            await services.close()

    return run_async(main())
