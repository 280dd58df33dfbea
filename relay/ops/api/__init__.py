"""The operator's surface: the HTTP API with its OpenAPI document, Prometheus metrics and the live status page.

One implementation, served by every relay validator (``parkrelay node relay --api-port N``) and every relayer
(``parkrelay relayer start --api-port N``):

* :mod:`relay.ops.api.index` — the packet index: every packet and its four-phase timeline, from the chains' events
  (pure);
* :mod:`relay.ops.api.backend` — the deployment read from its chains, refreshed about once a second; the writes
  (transfer, lane pause and resume by governance);
* :mod:`relay.ops.api.server` — the aiohttp application: routes, bearer-token auth, typed errors
  (``relay/ops/api/openapi.yaml`` is its contract), the status page (``relay/ops/api/page/``) and its event stream;
* :mod:`relay.ops.api.metrics` — the Prometheus collectors of relay validators and relayers.
"""
