"""Starting the operator API inside a relay validator or a relayer process (the one place that knows both)."""

from __future__ import annotations

from typing import Any

from relay.ops.api.server import ApiOptions, ApiServer

__all__ = ["relayer_api", "validator_api"]


async def validator_api(cfg: Any, node: Any, options: ApiOptions) -> ApiServer:
    """The API of relay validator ``node`` (a started :class:`chains.common.node.ParkNode`): it reads the relay
    chain from its own node first, then from the other validators."""
    urls = [node.url, *(cfg.relay_url(v) for v in cfg.relay_validators if cfg.relay_url(v) != node.url)]
    server = ApiServer(cfg, options, relay_urls=urls, metrics=_metrics_of(node))
    await server.start()
    return server


async def relayer_api(cfg: Any, relayer: Any, options: ApiOptions) -> ApiServer:
    """The API of a relayer process; ``POST /api/v1/backlog/clear`` wakes ``relayer``."""
    from relay.ops.api.metrics import RelayerMetrics

    metrics = RelayerMetrics(relayer)
    relayer.observer = metrics
    server = ApiServer(cfg, options, relayer=relayer, metrics=metrics.render)
    await server.start()
    return server


def _metrics_of(service: Any) -> Any:
    """The process's Prometheus exposition, if the service keeps metrics (``metrics_text()``)."""
    render = getattr(service, "metrics_text", None)
    return render if callable(render) else None
