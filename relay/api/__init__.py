"""The operator's surface: the HTTP API with its OpenAPI document, Prometheus metrics and the live status page.

One implementation, served by every relay validator (``parkrelay node relay --api-port N``) and every relayer
(``parkrelay relayer start --api-port N``):

* :mod:`relay.api.index` — the packet index: every packet and its four-phase timeline, from the chains' events
  (pure);
* :mod:`relay.api.backend` — the deployment read from its chains, refreshed about once a second; the writes
  (transfer, lane pause and resume by governance);
* :mod:`relay.api.server` — the aiohttp application: routes, bearer-token auth, typed errors
  (``relay/api/openapi.yaml`` is its contract), the status page (``relay/api/page/``) and its event stream;
* :mod:`relay.api.metrics` — the Prometheus collectors of relay validators and relayers.
"""
