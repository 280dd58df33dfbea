"""Blocking, chain-kind-agnostic views of a deployment's park chains, for the CLI and the devnet demo.

The Python parks (DPoS, PoC) answer parkrelay's JSON-RPC; the Ethereum park answers Ethereum JSON-RPC and
keeps balances in ERC-20 contracts; the Fabric park answers hfc (gRPC) with its bridge chaincode's queries.
:func:`park_view` hides the difference behind one small interface: status, protocol records (SPEC §5 paths),
acks, sent packets, balances, escrow and voucher supply, and phase 1 (a transfer). Each Ethereum or Fabric call
opens and closes its own session (this is operator tooling, not a hot path).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from typing import Any

from chains.common.tx import Tx
from chains.registry import UnknownChainKindError
from protocol.codec import decode_ack
from protocol.errors import ParkRelayError
from protocol.paths import ack_path
from protocol.types import Acknowledgement, ChainId, LaneId
from relay.ops.config import ChainConfig, DeploymentConfig

__all__ = ["OPERATOR", "EthPark", "FabricPark", "ParkView", "PyPark", "TxRefusedError", "park_view", "rpc"]

OPERATOR = "operator"
"""The deployment account that operates each park's bridge registry (the bridge's ``rights_operator``)."""


def rpc(url: str, method: str, params: dict[str, Any] | None = None, timeout: float = 3.0) -> Any:
    """One parkrelay JSON-RPC call (blocking; for the CLI)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}).encode()
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http URL: {url}")
    req = urllib.request.Request(url + "/rpc", body, {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback URLs from the config
        out = json.loads(r.read())
    if "error" in out:
        data = out["error"].get("data")
        if isinstance(data, dict) and isinstance(data.get("code"), str):  # a protocol error: keep its code
            raise TxRefusedError(url, method, data, f"{method} on {url}: {out['error'].get('message')}")
        raise RuntimeError(f"{method} on {url}: {out['error'].get('message')}")
    return out["result"]


class TxRefusedError(RuntimeError):
    """A transaction a Python park executed and refused: ``code`` is the chain's error code (``auth.denied``…),
    ``error`` its whole error object (code, message, expected, got)."""

    def __init__(self, chain_id: str, op: str, error: Any, message: str | None = None) -> None:
        self.error = dict(error) if isinstance(error, dict) else {"message": str(error)}
        self.code = str(self.error.get("code", "protocol"))
        super().__init__(message or f"{op} failed on {chain_id}: {error}")


class ParkView:
    """What the operator tools read from, and do on, one park chain."""

    keeps_packets: bool = True
    """The bridge keeps each packet it sent in state (``packets/{dst}/{lane}/{seq}``, hex text) until it settles;
    False: only in its event log (Ethereum)."""

    def __init__(self, cfg: DeploymentConfig, chain: ChainConfig) -> None:
        self.cfg = cfg
        self.chain = chain
        self.url = chain.url_of(chain.nodes[0], cfg.host)

    def status(self) -> dict[str, Any]:
        """``{height, final_height, head}`` of the node."""
        raise NotImplementedError

    def query(self, path: str) -> bytes | None:
        """The raw value of a protocol record (``commitments/…``, ``receipts/…``), None when absent."""
        raise NotImplementedError

    def query_many(self, paths: list[str]) -> dict[str, bytes | None]:
        """:meth:`query` of many records (a view over a node that reads many keys in one call overrides it)."""
        return {path: self.query(path) for path in paths}

    def ack(self, src: str, lane: str, sequence: int) -> Acknowledgement | None:
        """The ack this chain wrote for packet ``src/lane/sequence`` as a target, if any."""
        raise NotImplementedError

    def acks(self, packets: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], Acknowledgement | None]:
        """:meth:`ack` of many ``(src, lane, sequence)`` packets. This default reads the ack records in one
        :meth:`query_many` (the parks that keep acks in state as hex text); a park keeping them elsewhere
        overrides :meth:`ack` and this."""
        paths = [ack_path(ChainId(src), LaneId(lane), seq).decode() for src, lane, seq in packets]
        raw = self.query_many(paths)
        return {item: None if raw[path] is None else decode_ack(bytes.fromhex(raw[path].decode()))  # type: ignore[union-attr]
                for item, path in zip(packets, paths, strict=True)}

    def sent(self) -> list[tuple[bytes, int]]:
        """Every packet this chain committed: ``(packet bytes, height)``."""
        raise NotImplementedError

    def account(self, name: str) -> str:
        """How packets name the deployment account ``name`` on this chain."""
        return name

    def balance(self, name: str, denom: str) -> int:
        raise NotImplementedError

    def escrow(self, denom: str) -> int:
        raise NotImplementedError

    def voucher_supply(self, denom: str) -> int:
        raise NotImplementedError

    def transfer(self, sender: str, dst: str, receiver: str, amount_wh: int, denom: str, lane: str,
                 timeout_ms: int, *, wait_final: bool = True) -> dict[str, Any]:
        """Phase 1 of energy: ``{"packet": raw bytes, "height": n, "tx": hash}``. With ``wait_final`` (the default)
        only once the block holding it is final on the park: before that a reorganisation may include the transfer
        again at another height, and another sender on the lane may take its sequence, so a packet key read
        from a block that is not final may never exist."""
        return self.send(sender, dst, receiver, lane, timeout_ms, {"kind": "energy", "denom": denom,
                                                                   "amount_wh": amount_wh}, wait_final=wait_final)

    def send(self, sender: str, dst: str, receiver: str, lane: str, timeout_ms: int, asset: dict[str, Any], *,
             wait_final: bool = True) -> dict[str, Any]:
        """Phase 1 of any asset, as :meth:`transfer`. ``asset``: ``{"kind": "energy", "denom", "amount_wh"}``,
        ``{"kind": "charging_right", "right_id"}`` (the id as this park holds it, trace included) or
        ``{"kind": "reputation", "subject", "model"?}`` (the park attests its own score of ``subject``)."""
        raise NotImplementedError

    def rights(self) -> dict[str, Any]:
        """Where the charging rights held on this park are: ``{live, escrowed, burning, bookings}`` as
        :func:`chains.common.rights.rights_report` (the same shape on every kind)."""
        raise NotImplementedError

    def issue_right(self, right_id: str, station: str, transformer: str, power_kw: int, slot_start_ms: int,
                    slot_end_ms: int, owner: str) -> dict[str, Any]:
        """Issue a home charging right to ``owner`` as the park operator (the admission rule applies)."""
        raise NotImplementedError

    def set_transformer(self, name: str, capacity_kw: int) -> dict[str, Any]:
        """Register or change a transformer's capacity, as the park operator."""
        raise NotImplementedError

    def set_station(self, name: str, transformer: str) -> dict[str, Any]:
        """Register a charging station behind a transformer, as the park operator."""
        raise NotImplementedError

    def registry(self) -> dict[str, Any]:
        """``{"transformers": {name: capacity_kw}, "stations": {name: transformer}, "bookings": {transformer:
        [{right_id, power_kw, slot_start_ms, slot_end_ms}]}}``."""
        raise NotImplementedError

    def imported_reputation(self, src: str, subject: str, model: str) -> dict[str, Any] | None:
        """What this park recorded of ``src``'s attestation about ``subject`` under ``model``
        (``{score, source_height, height, holder}``), or None."""
        raise NotImplementedError


class PyPark(ParkView):
    """A DPoS or PoC park over parkrelay's JSON-RPC."""

    def status(self) -> dict[str, Any]:
        st = rpc(self.url, "status", timeout=1.0)
        return {"height": st["height"], "final_height": st["final_height"], "head": st["head"][:12]}

    def query(self, path: str) -> bytes | None:
        v = rpc(self.url, "query", {"key": path})["value"]
        return None if v is None else bytes.fromhex(v)

    def query_many(self, paths: list[str]) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for i in range(0, len(paths), 1000):  # the node's limit per call
            values = rpc(self.url, "queryMany", {"keys": paths[i:i + 1000]}, timeout=15.0)["values"]
            out.update((k, None if v is None else bytes.fromhex(v)) for k, v in values.items())
        return out

    def ack(self, src: str, lane: str, sequence: int) -> Acknowledgement | None:
        return self.acks([(src, lane, sequence)])[(src, lane, sequence)]

    def sent(self) -> list[tuple[bytes, int]]:
        head, out, start = rpc(self.url, "status")["height"], [], 1
        while start <= head:
            for ev in rpc(self.url, "getEvents", {"from": start, "to": head, "type": "send_packet"}):
                out.append((bytes.fromhex(ev["packet"]), int(ev["height"])))
            start += 1001
        return out

    def _int(self, path: str) -> int:
        v = self.query(path)
        return int(v.decode()) if v else 0

    def balance(self, name: str, denom: str) -> int:
        return int(rpc(self.url, "getBalance", {"account": name, "denom": denom})["amount_wh"])

    def escrow(self, denom: str) -> int:
        return self._int(f"escrow/{denom}")

    def voucher_supply(self, denom: str) -> int:
        return self._int(f"supply/{denom}")

    def _submit(self, sender: str, op: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Sign ``op`` as ``sender`` (its devnet key), submit it and wait for its block: (hash, result).
        A failed transaction raises with the chain's error."""
        from relay.ops.keys import ed25519_signer
        from relay.ops.layout import account_key_path, node_key_path

        path = account_key_path(self.cfg, self.chain.id, sender)
        if not path.exists() and sender in self.chain.nodes:  # a witness's or farmer's account is its node key's
            path = node_key_path(self.cfg, self.chain.id, sender)
        signer = ed25519_signer(path)
        acct = rpc(self.url, "getAccount", {"name": sender})
        tx = Tx.signed(signer, self.chain.id, sender, int(acct["nonce"]) + int(acct.get("pending", 0)), op, args)
        tx_hash = rpc(self.url, "submitTx", {"tx": tx.to_json()})["hash"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # getTxResult reads the canonical chain only: after a reorg it answers for the new branch
            res = rpc(self.url, "getTxResult", {"hash": tx_hash})
            if res is not None:
                if not res["ok"]:
                    raise TxRefusedError(self.chain.id, op, res["error"])
                return tx_hash, dict(res)
            time.sleep(0.25)
        raise RuntimeError(f"{op} {tx_hash[:16]} not in a block of {self.chain.id} within 60 s")

    def send(self, sender: str, dst: str, receiver: str, lane: str, timeout_ms: int, asset: dict[str, Any], *,
             wait_final: bool = True) -> dict[str, Any]:
        args = {"dst_chain": dst, "lane": lane, "receiver": receiver, "timeout_timestamp_ms": timeout_ms, **asset}
        tx_hash, res = self._submit(sender, "bridge.send", args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if wait_final and int(rpc(self.url, "status")["final_height"]) < int(res["height"]):
                time.sleep(0.25)
                res = rpc(self.url, "getTxResult", {"hash": tx_hash}) or res  # a reorg may move it
                continue
            for ev in rpc(self.url, "getEvents", {"from": res["height"], "to": res["height"], "type": "send_packet"}):
                if ev.get("tx") == tx_hash:
                    return {"packet": bytes.fromhex(ev["packet"]), "height": res["height"], "tx": tx_hash}
            time.sleep(0.25)
            res = rpc(self.url, "getTxResult", {"hash": tx_hash}) or res
        raise RuntimeError(f"send {tx_hash[:16]} not in a {'final ' if wait_final else ''}block within 60 s")

    def rights(self) -> dict[str, Any]:
        out: dict[str, Any] = rpc(self.url, "getRights")
        out.pop("height", None)
        return out

    def issue_right(self, right_id: str, station: str, transformer: str, power_kw: int, slot_start_ms: int,
                    slot_end_ms: int, owner: str) -> dict[str, Any]:
        tx_hash, res = self._submit(OPERATOR, "rights.issue", {
            "right_id": right_id, "station": station, "transformer": transformer, "power_kw": power_kw,
            "slot_start_ms": slot_start_ms, "slot_end_ms": slot_end_ms, "owner": owner})
        return {"tx": tx_hash, "height": res["height"]}

    def set_transformer(self, name: str, capacity_kw: int) -> dict[str, Any]:
        tx_hash, res = self._submit(OPERATOR, "rights.set_transformer", {"name": name, "capacity_kw": capacity_kw})
        return {"tx": tx_hash, "height": res["height"]}

    def set_station(self, name: str, transformer: str) -> dict[str, Any]:
        tx_hash, res = self._submit(OPERATOR, "rights.set_station", {"name": name, "transformer": transformer})
        return {"tx": tx_hash, "height": res["height"]}

    def registry(self) -> dict[str, Any]:
        out: dict[str, Any] = rpc(self.url, "getRegistry")
        out.pop("height", None)
        return out

    def imported_reputation(self, src: str, subject: str, model: str) -> dict[str, Any] | None:
        raw = self.query(f"imported_reputation/{src}/{subject}")
        rec = json.loads(raw) if raw else {}
        got = rec.get(model) if isinstance(rec, dict) else None
        return dict(got) if isinstance(got, dict) else None


class EthPark(ParkView):
    """The Ethereum park: anvil's JSON-RPC, the bridge and the ERC-20s the park's genesis names."""

    keeps_packets = False

    def __init__(self, cfg: DeploymentConfig, chain: ChainConfig) -> None:
        super().__init__(cfg, chain)
        from relay.ops.layout import genesis_path

        self.genesis = json.loads(genesis_path(cfg, chain.id).read_text())
        self.bridge: str = self.genesis["contracts"]["bridge"]
        self.energy: str = self.genesis["contracts"]["energy_token"]
        self.depth = int(chain.params["confirmation_depth"])

    def _run(self, fn: Any) -> Any:
        from adapters import ethereum as eth

        async def go() -> Any:
            src = eth.source(self.url, self.chain.id, self.bridge, self.depth, timeout_s=3.0)
            try:
                return await fn(src)
            finally:
                await src.close()

        return asyncio.run(go())

    def status(self) -> dict[str, Any]:
        async def st(src: Any) -> dict[str, Any]:
            head = await src.latest_height()
            block = await src.block(head)
            return {"height": head, "final_height": max(0, head - self.depth), "head": str(block["hash"])[2:14]}

        try:
            result: dict[str, Any] = self._run(st)
        except Exception as exc:  # the probe's contract: unreachable is OSError, as for the Python parks
            raise OSError(str(exc)) from exc
        return result

    def query(self, path: str) -> bytes | None:
        return self.query_many([path])[path]

    def query_many(self, paths: list[str]) -> dict[str, bytes | None]:
        async def q(src: Any) -> dict[str, str | None]:
            out: dict[str, str | None] = await src.query_many(paths)
            return out

        return {k: None if v is None else bytes.fromhex(v) for k, v in self._run(q).items()}

    def _events(self, kind: str) -> list[dict[str, Any]]:
        async def ev(src: Any) -> list[dict[str, Any]]:
            head = await src.latest_height()
            out: list[dict[str, Any]] = await src.events(0, head, kind)
            return out

        result: list[dict[str, Any]] = self._run(ev)
        return result

    def ack(self, src: str, lane: str, sequence: int) -> Acknowledgement | None:
        """The ack the bridge wrote for a packet, from its ``write_ack`` logs. The logs are read once per view and
        then only from the last block read (a receipt is written once), so a view reused over many packets reads
        each log once."""
        cache: dict[tuple[str, str, int], str] = self.__dict__.setdefault("_acks", {})
        key = (src, lane, sequence)
        if key not in cache:
            start = int(self.__dict__.get("_acks_to", -1)) + 1

            async def ev(s: Any) -> tuple[int, list[dict[str, Any]]]:
                head = await s.latest_height()
                out: list[dict[str, Any]] = await s.events(start, head, "write_ack") if head >= start else []
                return head, out

            head, events = self._run(ev)
            for e in events:
                cache.setdefault((e["src"], e["lane"], int(e["sequence"])), e["ack"])
            self.__dict__["_acks_to"] = max(head, start - 1)
        raw = cache.get(key)
        return None if raw is None else decode_ack(bytes.fromhex(raw))

    def acks(self, packets: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], Acknowledgement | None]:
        return {item: self.ack(*item) for item in packets}  # the first reads the new logs; the rest are cached

    def sent(self) -> list[tuple[bytes, int]]:
        return [(bytes.fromhex(e["packet"]), int(e["height"])) for e in self._events("send_packet")]

    def account(self, name: str) -> str:
        return str(self.genesis["accounts"][name]["address"]) if name in self.genesis["accounts"] else name

    def _erc20(self, token: str, fn: str, *args: Any) -> int:
        from adapters.ethereum.abi import decode_result, encode_call

        if int(token, 16) == 0:
            return 0

        async def call(src: Any) -> int:
            raw = await src.rpc.call("eth_call", [{"to": token, "data": "0x" + encode_call(fn, list(args)).hex()},
                                                  "latest"])
            (v,) = decode_result(fn, bytes.fromhex(str(raw).removeprefix("0x")))
            return int(v)

        result: int = self._run(call)
        return result

    def _token(self, denom: str) -> str:
        from adapters.ethereum.abi import decode_result, encode_call

        if denom == "kWh":
            return self.energy

        async def call(src: Any) -> str:
            raw = await src.rpc.call("eth_call", [{"to": self.bridge,
                                                   "data": "0x" + encode_call("tokenOf", [denom]).hex()}, "latest"])
            (v,) = decode_result("tokenOf", bytes.fromhex(str(raw).removeprefix("0x")))
            return str(v)

        result: str = self._run(call)
        return result

    def balance(self, name: str, denom: str) -> int:
        return self._erc20(self._token(denom), "balanceOf", self.account(name))

    def escrow(self, denom: str) -> int:
        return self._erc20(self._token(denom), "balanceOf", self.bridge)

    def voucher_supply(self, denom: str) -> int:
        return self._erc20(self._token(denom), "totalSupply") if denom != "kWh" else 0

    def _as(self, account: str | None, fn: Any) -> Any:
        """``fn(target)`` with a target signing as deployment account ``account`` (its devnet key); None: reads
        only (:meth:`_read`)."""
        from adapters import ethereum as eth
        from relay.ops.keys import read_secret
        from relay.ops.layout import account_key_path

        key = os.urandom(32) if account is None else read_secret(account_key_path(self.cfg, self.chain.id, account))

        async def go() -> Any:
            t = eth.target(self.url, self.chain.id, self.bridge, key)
            try:
                return await fn(t)
            finally:
                await t.close()

        return asyncio.run(go())

    def _read(self, fn: Any) -> Any:
        """``fn(target)`` for reads of the park's contracts (``eth_call``s): they sign nothing, so no deployment key
        is needed and a key made for the call stands in for one."""
        return self._as(None, fn)

    def send(self, sender: str, dst: str, receiver: str, lane: str, timeout_ms: int, asset: dict[str, Any], *,
             wait_final: bool = True) -> dict[str, Any]:
        from adapters import ethereum as eth
        from adapters.ethereum import assets

        kind = asset.get("kind")

        fees = asset.get("fees")

        async def go(t: Any) -> Any:
            if kind == "energy":
                return await eth.send_energy(t, dst, lane, asset["denom"], asset["amount_wh"], receiver, timeout_ms,
                                             fees=fees)
            if kind == "charging_right":
                return await assets.send_right(t, dst, lane, asset["right_id"], receiver, timeout_ms, fees=fees)
            if kind == "reputation":
                return await assets.send_reputation(t, dst, lane, asset["subject"], receiver, timeout_ms, fees=fees)
            raise ValueError(f"unknown asset kind {kind!r}")

        sent = self._as(sender, go)
        deadline = time.monotonic() + 60
        while wait_final and int(self.status()["final_height"]) < sent.height:
            if time.monotonic() > deadline:
                raise RuntimeError(f"send {sent.tx_hash[:16]}'s block {sent.height} not final within 60 s")
            time.sleep(0.25)
        return {"packet": sent.raw, "height": sent.height, "tx": sent.tx_hash}

    def rights(self) -> dict[str, Any]:
        """The rights report (:meth:`ParkView.rights`) from the ``ChargingRights`` contract and the bridge's logs:
        an escrowed or burning right's packet is the last one this park sent carrying it. ``bookings`` lists the
        live rights per transformer (the contract books power per slot, not ids): the booked ones at rest."""
        from adapters.ethereum import assets
        from protocol.codec import decode_charging_right, decode_packet
        from protocol.types import PacketKind

        infos = self._read(lambda t: assets.rights_list(t))
        carried: dict[str, dict[str, Any]] = {}
        for e in self._events("send_packet"):
            p = decode_packet(bytes.fromhex(e["packet"]))
            if p.kind is PacketKind.CHARGING_RIGHT:
                carried[decode_charging_right(p.payload).right_id] = {"chain": p.dst_chain, "lane": p.lane,
                                                                      "sequence": p.sequence}
        out: dict[str, Any] = {"live": {}, "escrowed": {}, "burning": {}, "bookings": {}}
        for r in infos:
            if r.state == "live":
                out["live"][r.right_id] = {"home_park": r.home_park, "owner": r.owner, "station": r.station,
                                           "transformer": r.transformer, "power_kw": r.power_kw,
                                           "slot_start_ms": r.slot_start_ms, "slot_end_ms": r.slot_end_ms}
                out["bookings"].setdefault(r.transformer, []).append(r.right_id)
            elif r.state in ("escrowed", "burning"):
                out[r.state][r.right_id] = {"home_park": r.home_park, **carried.get(r.right_id, {})}
        return out

    def issue_right(self, right_id: str, station: str, transformer: str, power_kw: int, slot_start_ms: int,
                    slot_end_ms: int, owner: str) -> dict[str, Any]:
        from adapters.ethereum import assets

        info = self._as(OPERATOR, lambda t: assets.issue_right(t, right_id, owner, station, transformer, power_kw,
                                                               slot_start_ms, slot_end_ms))
        return {"right": info.to_json()}

    def set_transformer(self, name: str, capacity_kw: int) -> dict[str, Any]:
        from adapters.ethereum import assets

        result: dict[str, Any] = self._as(OPERATOR, lambda t: assets.set_transformer(t, name, capacity_kw))
        return result

    def set_station(self, name: str, transformer: str) -> dict[str, Any]:
        from adapters.ethereum import assets

        result: dict[str, Any] = self._as(OPERATOR, lambda t: assets.set_station(t, name, transformer))
        return result

    def registry(self) -> dict[str, Any]:
        """Transformers and stations as the contract's ``TransformerSet`` / ``StationSet`` logs last set them, each
        transformer's capacity read back; ``bookings``: the live rights on each (see :meth:`rights`)."""
        from adapters.ethereum import assets

        async def read(t: Any) -> tuple[dict[str, Any], dict[str, int]]:
            names = await assets.registry_names(t)
            shown = [await assets.transformer_show(t, n) for n in names["transformers"]]
            return names, {s["name"]: int(s["capacity_kw"]) for s in shown if s is not None}

        names, transformers = self._read(read)
        bookings = {tr: [{"right_id": rid} for rid in ids] for tr, ids in self.rights()["bookings"].items()}
        return {"transformers": transformers, "stations": names["stations"], "bookings": bookings}

    def set_participant_score(self, account: str, score_bp: int) -> dict[str, Any]:
        """Operator: record a settled delivery of ``account`` whose delivered / contracted energy is ``score_bp``
        basis points (the delivery record of docs/research.md#seed-001: what the park attests until its market
        records deliveries)."""
        from adapters.ethereum import assets

        result: dict[str, Any] = self._as(OPERATOR, lambda t: assets.record_delivery(t, account, 10_000, score_bp))
        return result

    def imported_reputation(self, src: str, subject: str, model: str) -> dict[str, Any] | None:
        from adapters.ethereum import assets

        rec = self._read(lambda t: assets.imported_reputation(t, src, subject, model))
        return dict(rec) if isinstance(rec, dict) else None


class FabricPark(ParkView):
    """The Fabric park through hfc (:mod:`adapters.fabric`) and the park's connection profile
    (:func:`relay.ops.layout.fabric_profile_path`): reads as the operator organisation's admin, phase 1 as the
    sending account's own client identity. Accounts are MSP identities (``<MSP>:<name>@<MSP>``, the park's
    genesis ``accounts``); state reads are the bridge chaincode's queries (its ``attest`` for a protocol path)."""

    def __init__(self, cfg: DeploymentConfig, chain: ChainConfig) -> None:
        super().__init__(cfg, chain)
        from relay.ops.layout import fabric_profile_path, genesis_path

        self.genesis = json.loads(genesis_path(cfg, chain.id).read_text())
        self.profile = fabric_profile_path(cfg, chain)
        self.ready = cfg.data_dir / chain.id / "ready.json"

    def _run(self, fn: Any, user: str = "admin") -> Any:
        from adapters import fabric

        async def go() -> Any:
            gw = fabric.connect(self.profile, self.chain.id, user, org=_ADMIN_ORG if user == "admin" else None,
                                channel=self.genesis["channel_id"], chaincode=self.genesis["chaincode"],
                                timeout_s=5.0)
            try:
                return await fn(fabric.source(gw), gw)
            finally:
                await gw.close()

        return asyncio.run(go())

    def status(self) -> dict[str, Any]:
        if not self.ready.exists():  # the supervisor writes it once the park is up, channel and bridge included
            raise OSError(f"{self.chain.id}: no {self.ready} (the park's supervisor is not up)")

        async def st(src: Any, _: Any) -> dict[str, Any]:
            head = await src.latest_height()
            block = await src.block(head)
            return {"height": head, "final_height": head, "head": block.header.hash.hex()[:12]}

        try:
            result: dict[str, Any] = self._run(st)
        except (ParkRelayError, ValueError) as exc:  # the probe's contract: unreachable is OSError
            raise OSError(str(exc)) from exc
        return result

    def query(self, path: str) -> bytes | None:
        return self.query_many([path])[path]

    def query_many(self, paths: list[str]) -> dict[str, bytes | None]:
        async def q(src: Any, _: Any) -> dict[str, str | None]:
            out: dict[str, str | None] = await src.query_many(paths)
            return out

        return {k: None if v is None else bytes.fromhex(v) for k, v in self._run(q).items()}

    def _json(self, fcn: str, *args: str) -> Any:
        async def q(src: Any, _: Any) -> Any:
            return await src.query_json(fcn, *args)

        return self._run(q)

    def ack(self, src: str, lane: str, sequence: int) -> Acknowledgement | None:
        return self.acks([(src, lane, sequence)])[(src, lane, sequence)]

    def sent(self) -> list[tuple[bytes, int]]:
        # an ordered block never changes: the blocks read once are not read again (each is a peer query and a
        # decode), so polling a packet's state stays cheap as the chain grows
        key = str(self.profile)
        done, found = _FABRIC_SENT.get(key, (0, []))

        async def ev(src: Any, _: Any) -> tuple[int, list[tuple[bytes, int]]]:
            head = await src.latest_height()
            new = [(bytes.fromhex(e["packet"]), int(e["height"])) for e in await src.events(done, head, "send_packet")]
            return head + 1, new

        upto, new = self._run(ev)
        _FABRIC_SENT[key] = (upto, found + new)
        return list(found + new)

    def account(self, name: str) -> str:
        return str(self.genesis["accounts"].get(name, name))

    def balance(self, name: str, denom: str) -> int:
        return int(self._json("balance", self.account(name), denom)["amount_wh"])

    def escrow(self, denom: str) -> int:
        return int(self._json("supply")["escrow"].get(denom, 0))

    def voucher_supply(self, denom: str) -> int:
        return int(self._json("supply")["vouchers"].get(denom, 0))

    def send(self, sender: str, dst: str, receiver: str, lane: str, timeout_ms: int, asset: dict[str, Any], *,
             wait_final: bool = True) -> dict[str, Any]:
        """Phase 1 as ``sender``'s own identity; returned once committed VALID (an ordered block is final)."""
        from adapters import fabric
        from adapters.fabric import assets

        kind = asset.get("kind")

        fees = asset.get("fees")

        async def go(_: Any, gw: Any) -> Any:
            t = fabric.target(gw)
            if kind == "energy":
                return await fabric.send_energy(t, dst, lane, asset["denom"], asset["amount_wh"], receiver, timeout_ms,
                                                fees=fees)
            if kind == "charging_right":
                return await assets.send_right(t, dst, lane, asset["right_id"], receiver, timeout_ms, fees=fees)
            if kind == "reputation":
                return await assets.send_reputation(t, dst, lane, asset["subject"], receiver, timeout_ms, fees=fees)
            raise ValueError(f"unknown asset kind {kind!r}")

        sent = self._run(go, user=sender)
        return {"packet": sent.raw, "height": sent.height, "tx": sent.tx_hash}

    def _scan(self, *prefixes: str) -> Any:
        """The bridge's asset records under ``prefixes`` (its ``scan`` query) as a state the shared reports read."""
        from chains.common.state import ChainState

        async def scan(src: Any, _: Any) -> list[Any]:
            return [await src.query_json("scan", prefix) for prefix in prefixes]  # one session for all

        state = ChainState()
        for answer in self._run(scan):
            for k, v in answer["items"].items():
                state.set(k.encode(), v.encode())
        return state

    def rights(self) -> dict[str, Any]:
        from chains.common.rights import rights_report

        return rights_report(self._scan("rights/", "rights_burned/", "bookings/"))

    def registry(self) -> dict[str, Any]:
        from chains.common.rights import registry_report

        return registry_report(self._scan("transformers/", "stations/", "bookings/"))

    def _operator(self, fn: Any) -> dict[str, Any]:
        from adapters import fabric

        async def go(_: Any, gw: Any) -> Any:
            return await fn(fabric.target(gw))

        events = self._run(go, user=OPERATOR)
        return {"events": events}

    def issue_right(self, right_id: str, station: str, transformer: str, power_kw: int, slot_start_ms: int,
                    slot_end_ms: int, owner: str) -> dict[str, Any]:
        from adapters.fabric import assets

        return self._operator(lambda t: assets.issue_right(t, right_id, station, transformer, power_kw, slot_start_ms,
                                                           slot_end_ms, owner))

    def set_transformer(self, name: str, capacity_kw: int) -> dict[str, Any]:
        from adapters.fabric import assets

        return self._operator(lambda t: assets.set_transformer(t, name, capacity_kw))

    def set_station(self, name: str, transformer: str) -> dict[str, Any]:
        from adapters.fabric import assets

        return self._operator(lambda t: assets.set_station(t, name, transformer))

    def set_participant_score(self, account: str, score_bp: int) -> dict[str, Any]:
        """Operator: ``account`` a certified participant of standing ``score_bp`` (what the park attests)."""
        return self.set_standing(account, True, score_bp)

    def set_standing(self, account: str, certified: bool, score: int) -> dict[str, Any]:
        """Operator: a participant's standing (the certified participants of docs/research.md#seed-004), the score
        the park attests."""
        from adapters.fabric import assets

        return self._operator(lambda t: assets.set_standing(t, account, certified, score))

    def imported_reputation(self, src: str, subject: str, model: str) -> dict[str, Any] | None:
        from adapters.fabric import assets

        async def q(src_side: Any, _: Any) -> Any:
            return await assets.imported_reputation(src_side, src, subject, model)

        rec = self._run(q)
        return dict(rec) if isinstance(rec, dict) else None


_FABRIC_SENT: dict[str, tuple[int, list[tuple[bytes, int]]]] = {}
"""Per Fabric park (its connection profile): the next block to read and the packets sent in the blocks before it."""
_ADMIN_ORG = "OperatorMSP"
"""The organisation whose admin the Fabric view reads as (every organisation has an ``admin``)."""

_VIEWS: dict[str, type[ParkView]] = {"dpos": PyPark, "poc": PyPark, "ethereum": EthPark, "fabric": FabricPark}
"""The operator tools' view of each park chain kind: parkrelay's park JSON-RPC (PyPark), Ethereum's (EthPark) or
Fabric's through hfc (FabricPark).
A unit test checks every kind of :data:`chains.registry.KINDS` has one."""


def park_view(cfg: DeploymentConfig, chain_id: str) -> ParkView:
    chain = cfg.chain(chain_id)
    try:
        view = _VIEWS[chain.kind]
    except KeyError as exc:
        raise UnknownChainKindError(chain.kind) from exc
    return view(cfg, chain)

