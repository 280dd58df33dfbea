"""``parkrelay relay client`` (relay/ops/recovery.py) without a deployment: the in-flight packets a plan lists, read
from relay events, blocks and state (a fake relay RPC), and the signatures ``sign`` adds from the validator key files
on this host. The whole command runs against real processes in tests/integration/test_client_recovery.py."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from protocol.codec import encode_packet
from protocol.crypto import ed25519_verify
from protocol.types import Packet, PacketKind
from relay.chain.state_machine.governance import governance_sign_bytes
from relay.ops import recovery
from relay.ops.config import ConfigError
from relay.ops.keys import create_secret, ed25519_signer
from relay.ops.layout import relay_key_paths


def _packet(seq: int, amount: int) -> bytes:
    return encode_packet(Packet(src_chain="poc-park", dst_chain="dpos-park", lane="lane-0", sequence=seq,
                                kind=PacketKind.ENERGY, payload=amount.to_bytes(8, "big"), sender="carol",
                                receiver="alice", timeout_timestamp_ms=10**13))


def test_in_flight_packets_are_read_from_events_blocks_and_state(monkeypatch: pytest.MonkeyPatch) -> None:
    p1, p2, p3, p1_other = _packet(1, 5), _packet(2, 7), _packet(3, 9), _packet(1, 6)
    c = {raw: hashlib.sha256(raw).hexdigest() for raw in (p1, p2, p3, p1_other)}
    events = [  # p1 verified at 3; p2 at 4 (it has an outcome since); p3 at 4 (revoked since); another chain's
        {"type": "packet_verified", "src": "poc-park", "dst": "dpos-park", "lane": "lane-0", "sequence": 1,
         "commitment": c[p1], "height": 3},
        {"type": "packet_verified", "src": "poc-park", "dst": "dpos-park", "lane": "lane-0", "sequence": 2,
         "commitment": c[p2], "height": 4},
        {"type": "packet_verified", "src": "poc-park", "dst": "dpos-park", "lane": "lane-0", "sequence": 3,
         "commitment": c[p3], "height": 4},
        {"type": "packet_verified", "src": "dpos-park", "dst": "poc-park", "lane": "lane-0", "sequence": 1,
         "commitment": "00" * 32, "height": 4},
    ]
    blocks = {3: {"txs": [{"op": "packet.verify", "args": {"packet": p1.hex()}}]},
              4: {"txs": [{"op": "packet.verify_batch", "args": {"items": [{"packet": p2.hex()},
                                                                           {"packet": p3.hex()}]}}]}}
    # p1's client froze since: its record moved to relay/suspended (SPEC §8.8)
    state = {"relay/suspended/poc-park/dpos-park/lane-0/1": c[p1], "relay/verified/poc-park/dpos-park/lane-0/2": c[p2],
             "relay/outcome/poc-park/dpos-park/lane-0/2": "01"}

    def relay(cfg: Any, method: str, params: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        p = params or {}
        if method == "status":
            return {"height": 5}
        if method == "getEvents":
            return [e for e in events if p["from"] <= e["height"] <= p["to"]]
        if method == "getBlock":
            return blocks[p["height"]]
        if method == "query":
            return {"value": state.get(p["key"])}
        raise AssertionError(method)

    monkeypatch.setattr(recovery, "_relay", relay)
    assert recovery.collect_in_flight(SimpleNamespace(), "poc-park") == [p1]  # type: ignore[arg-type]
    # verified again since with another packet at the sequence whose bytes the blocks do not hold: an error, not a guess
    state["relay/suspended/poc-park/dpos-park/lane-0/1"] = c[p1_other]
    events[0]["commitment"] = c[p1_other]
    with pytest.raises(RuntimeError):
        recovery.collect_in_flight(SimpleNamespace(), "poc-park")  # type: ignore[arg-type]


def test_sign_adds_the_signatures_of_the_validator_keys_on_this_host(tmp_path: Path) -> None:
    cfg: Any = SimpleNamespace(data_dir=tmp_path, relay_chain_id="relay", relay_validators=("op-a", "op-b", "op-c",
                                                                                               "op-d"))
    for v in ("op-a", "op-c", "op-d"):  # op-b's key is on another host
        create_secret(relay_key_paths(cfg, v)[0])
    plan: dict[str, Any] = {"v": 1, "op": "client.recover", "relay_chain_id": "relay", "nonce": 4,
                            "params": {"chain_id": "poc-park", "client_type": "poc", "init": {}, "packets": []},
                            "signatures": []}
    assert recovery.sign(cfg, plan) == ["op-a", "op-c", "op-d"]
    assert recovery.sign(cfg, plan) == []  # signing twice adds nothing
    msg = governance_sign_bytes("relay", 4, "client.recover", plan["params"])
    assert [s["validator_index"] for s in plan["signatures"]] == [0, 2, 3]
    for s in plan["signatures"]:
        key = ed25519_signer(relay_key_paths(cfg, cfg.relay_validators[s["validator_index"]])[0])
        ed25519_verify(key.pubkey, msg, bytes.fromhex(s["signature"]), what="governance signature")
    with pytest.raises(ConfigError):
        recovery.sign(cfg, {**plan, "relay_chain_id": "other-relay"})
