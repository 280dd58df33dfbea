"""The relay state machine on the real ``cometbft`` v0.38.25 (issue 17, SPEC §7.11): one CometBFT validator runs
:class:`~relay.chain.abci.app.RelayAbciApp` over the ABCI socket; a relay transaction goes in through CometBFT's RPC,
and the certificate of its height comes back through CometBFT's ``abci_query`` and verifies as a park bridge checks
one (the genesis relay validator set trusted, :func:`~protocol.certificate.verify_certificate`).

What this shows against the real node, beyond the unit tests' hand-built requests:

* CometBFT takes the app's answer to InitChain: its validator set (the consensus key the relay validator is mapped
  to) and vote extensions turned on from height 1 (the CometBFT genesis here leaves them off);
* CheckTx refusals reach the RPC client with the typed code in ``codespace``;
* ExtendVote / PrepareProposal / ProcessProposal carry the commit of each height into the next block: the chain
  keeps going past height 2 only if ProcessProposal accepts the commit items CometBFT's extended commits produce;
* the app hash FinalizeBlock returns at H is block H+1's ``app_hash`` and the state root the certificate of H proves
  against;
* an app that comes back with an empty store (its disk lost) is given InitChain and every block again by CometBFT's
  handshake replay (FinalizeBlock and Commit, no proposal calls), reaches the app hash CometBFT holds, re-stores
  the commits from the replayed blocks and serves the same certificates.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chains.common import wire
from chains.common.procs import spawn, stop
from chains.common.tx import Tx, account_path
from protocol.certificate import Validator, ValidatorSet, verify_certificate
from protocol.crypto import Ed25519Signer
from protocol.types import ChainId
from relay.chain.abci import cometbft
from relay.chain.abci.app import ConsensusKeys, RelayAbciApp, decode_commit_item
from relay.chain.abci.cometbft import cometbft_binary
from relay.chain.abci.cometbft import consensus_pubkey as cometbft_pubkey
from relay.chain.abci.server import AbciServer
from relay.chain.consensus import ValidatorKey
from tests.integration.harness import free_port_block
from tests.integration.test_abci_cometbft import Rpc, init_home, until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not cometbft_binary().exists(),
                       reason=f"no cometbft binary at {cometbft_binary()} (set PARKRELAY_COMETBFT_HOME; see "
                              "/work/shared/DEPENDENCIES.md, CometBFT)"),
]

CHAIN = "relay-on-cometbft"
BONDS = {"balances": {"alice": 1000, "bob": 1000, "mallory": 1000}}
"""The names the tests register, funded with a bond each (SPEC §6.9; the default ``min_bond`` is 1000)."""


def write_genesis(home: Path, relay_genesis: dict[str, Any], power: int) -> None:
    """CometBFT's genesis for the relay, as ``devnet init`` writes it: the relay chain id, the relay genesis as
    ``app_state``, the validator's relay power; vote extensions left OFF (the app's InitChain answer turns them on)."""
    cometbft.write_genesis(home, chain_id=CHAIN, genesis_time_ms=int(relay_genesis["genesis_time_ms"]),
                           app_state=relay_genesis, validators=[("v0", cometbft_pubkey(home), power)])


async def test_a_relay_tx_through_cometbft_yields_a_certificate_a_bridge_verifies(tmp_path: Path) -> None:
    base = free_port_block(3)
    abci_port, rpc_port, p2p_port = base, base + 1, base + 2
    home = tmp_path / "cometbft"
    relay_key = ValidatorKey(os.urandom(32), os.urandom(32))
    vset = ValidatorSet((Validator("v0", relay_key.ed25519_pubkey, relay_key.eth_address, 7),))
    relay_genesis = {"chain_id": CHAIN, "validators": wire.validator_set_to_json(vset), "clients": {}, "lanes": [],
                     "bonds": BONDS, "genesis_time_ms": int(time.time() * 1000) - 60_000}

    init_home(home, abci_addr=f"tcp://127.0.0.1:{abci_port}", rpc_port=rpc_port, p2p_port=p2p_port)
    write_genesis(home, relay_genesis, vset.total_power)
    app = RelayAbciApp(relay_genesis, name="v0", key=relay_key, consensus_keys=ConsensusKeys({"v0": cometbft_pubkey(
        home)}), data_dir=tmp_path / "app")
    server = AbciServer(app, port=abci_port, name="relay")
    await server.start()
    log_path = tmp_path / "cometbft.log"
    proc: subprocess.Popen[Any] | None = None
    try:
        with log_path.open("wb") as log_file:
            proc = spawn([str(cometbft_binary()), "start", "--home", str(home)], stdout=log_file,
                         stderr=subprocess.STDOUT)
        async with aiohttp.ClientSession() as session:
            rpc = Rpc(session, rpc_port)
            await until("height 3 (heights 2 and 3 carry commit items)", lambda: _at_least(rpc, 3))
            validators = (await rpc.get("validators"))["validators"]
            assert [(v["pub_key"]["value"], v["voting_power"]) for v in validators] == [
                (base64.b64encode(cometbft_pubkey(home)).decode(), "7")], "CometBFT runs the set InitChain answered"

            signer = Ed25519Signer(os.urandom(32))
            tx = Tx.signed(signer, CHAIN, "alice", 0, "account.register", {"pubkey": signer.pubkey.hex()})
            raw = wire_bytes(tx)
            res = await rpc.get("broadcast_tx_commit", tx="0x" + raw.hex())
            assert int(res["check_tx"]["code"]) == 0 and int(res["tx_result"]["code"]) == 0, res
            h = int(res["height"])

            forged = Tx.signed(Ed25519Signer(os.urandom(32)), CHAIN, "mallory", 0, "account.register",
                               {"pubkey": signer.pubkey.hex()})
            bad = await rpc.get("broadcast_tx_sync", tx="0x" + wire_bytes(forged).hex())
            assert (int(bad["code"]), bad["codespace"]) == (1, "signature.invalid"), bad
            other = Ed25519Signer(os.urandom(32))  # alice again, other bytes: past CometBFT's cache, to the app
            again = Tx.signed(other, CHAIN, "alice", 0, "account.register", {"pubkey": other.pubkey.hex()})
            dup = await rpc.get("broadcast_tx_sync", tx="0x" + wire_bytes(again).hex())
            assert (int(dup["code"]), dup["codespace"]) == (1, "packet.replay"), dup

            key = account_path("alice")

            async def certificate() -> dict[str, Any] | None:
                q = (await rpc.get("abci_query", path='"/certificate"', data="0x" + key.hex(), height=str(h)))
                resp: dict[str, Any] = q["response"]
                return resp if int(resp.get("code", 0)) == 0 else None

            resp = await until(f"the certificate of height {h} (its commit comes with {h + 1})", certificate)
            cert = wire.certificate_from_json(json.loads(base64.b64decode(resp["value"])))
            assert cert.value is not None and json.loads(cert.value)["pubkey"] == signer.pubkey.hex()
            verify_certificate(vset, ChainId(CHAIN), cert, key, cert.value)  # what a Python bridge runs
            assert cert.commit.header.height == h

            header_after = (await rpc.get("block", height=str(h + 1)))["block"]["header"]
            assert bytes.fromhex(header_after["app_hash"]) == cert.commit.header.state_root, \
                "the certificate of H proves against the app hash CometBFT puts in header H+1"
            block = (await rpc.get("block", height=str(h + 1)))["block"]
            first = base64.b64decode(block["data"]["txs"][0])
            assert decode_commit_item(first) == cert.commit, "block H+1 carries H's commit first"

            q = (await rpc.get("abci_query", path='"/key"', data="0x" + key.hex(), height=str(h),
                               prove="true"))["response"]
            assert base64.b64decode(q["value"]) == cert.value
    except BaseException:
        if log_path.exists():
            print("--- cometbft log (tail) ---\n" + log_path.read_text(errors="replace")[-6000:])
        raise
    finally:
        if proc is not None:
            stop(proc, timeout_s=5)
        await server.stop()
        app.close()


def wire_bytes(tx: Tx) -> bytes:
    from chains.common.state import canonical_json

    return canonical_json(tx.to_json())


async def _at_least(rpc: Rpc, height: int) -> bool:
    return await rpc.height() >= height


async def test_an_app_that_lost_its_store_is_replayed_by_cometbft_and_serves_the_same_certificate(
        tmp_path: Path) -> None:
    base = free_port_block(3)
    abci_port, rpc_port, p2p_port = base, base + 1, base + 2
    home = tmp_path / "cometbft"
    relay_key = ValidatorKey(os.urandom(32), os.urandom(32))
    vset = ValidatorSet((Validator("v0", relay_key.ed25519_pubkey, relay_key.eth_address, 1),))
    relay_genesis = {"chain_id": CHAIN, "validators": wire.validator_set_to_json(vset), "clients": {}, "lanes": [],
                     "bonds": BONDS, "genesis_time_ms": int(time.time() * 1000) - 60_000}
    init_home(home, abci_addr=f"tcp://127.0.0.1:{abci_port}", rpc_port=rpc_port, p2p_port=p2p_port)
    write_genesis(home, relay_genesis, vset.total_power)
    keys = ConsensusKeys({"v0": cometbft_pubkey(home)})
    log_path = tmp_path / "cometbft.log"
    key = account_path("alice")

    async def run(data_dir: Path, probe: Any) -> Any:
        """The app on ``data_dir`` and CometBFT until ``probe(rpc, app)`` returns something; both stopped after."""
        app = RelayAbciApp(relay_genesis, name="v0", key=relay_key, consensus_keys=keys, data_dir=data_dir)
        server = AbciServer(app, port=abci_port, name="relay")
        await server.start()
        proc: subprocess.Popen[Any] | None = None
        try:
            with log_path.open("ab") as log_file:
                proc = spawn([str(cometbft_binary()), "start", "--home", str(home)], stdout=log_file,
                             stderr=subprocess.STDOUT)
            async with aiohttp.ClientSession() as session:
                rpc = Rpc(session, rpc_port)
                return await probe(rpc, app)
        except BaseException:
            print("--- cometbft log (tail) ---\n" + log_path.read_text(errors="replace")[-6000:])
            raise
        finally:
            if proc is not None:  # CometBFT first, the app still answering while it shuts down
                await asyncio.to_thread(stop, proc, 10)
            await server.stop()
            app.close()

    async def first_life(rpc: Rpc, app: RelayAbciApp) -> tuple[int, bytes, int]:
        await until("height 2", lambda: _at_least(rpc, 2))
        signer = Ed25519Signer(os.urandom(32))
        tx = Tx.signed(signer, CHAIN, "alice", 0, "account.register", {"pubkey": signer.pubkey.hex()})
        res = await rpc.get("broadcast_tx_commit", tx="0x" + wire_bytes(tx).hex())
        h = int(res["height"])
        await app_reaches(app, h + 2)
        return h, app.certificate(key, h).commit.header.hash(), app.height

    h, header_hash, height = await run(tmp_path / "app", first_life)

    async def second_life(rpc: Rpc, app: RelayAbciApp) -> bool:
        await app_reaches(app, height + 2)  # replayed to ``height``, then on
        cert = app.certificate(key, h)
        assert cert.commit.header.hash() == header_hash, "the same header, the same commit round"
        assert cert.value is not None
        verify_certificate(vset, ChainId(CHAIN), cert, key, cert.value)
        return True

    assert await run(tmp_path / "app-after-disk-loss", second_life)
    text = log_path.read_text(errors="replace")
    replays = re.findall(r"ABCI Replay Blocks .*appHeight=0 storeHeight=(\d+)", text)
    assert len(replays) == 2 and int(replays[1]) >= height, f"CometBFT's handshake replayed the blocks: {replays}"


async def app_reaches(app: RelayAbciApp, height: int, deadline_s: float = 60.0) -> None:
    """Wait until the app has committed ``height`` (woken by each new head, never by a timer alone)."""
    end = time.monotonic() + deadline_s
    while app.height < height:
        if time.monotonic() > end:
            raise AssertionError(f"app at height {app.height}, not {height}, after {deadline_s} s")
        await app.node.wait_for_head(1.0)


# -- four validators ----------------------------------------------------------------------------------------------


class Validator4:
    """One of four: its relay key, CometBFT home, ports, app (in this process, on its own ABCI port), and process."""

    def __init__(self, i: int, root: Path, base_port: int) -> None:
        self.i = i
        self.name = f"v{i}"
        self.home = root / f"cometbft-{i}"
        self.data_dir = root / f"app-{i}"
        self.abci_port, self.rpc_port, self.p2p_port = base_port + 3 * i, base_port + 3 * i + 1, base_port + 3 * i + 2
        self.key = ValidatorKey(os.urandom(32), os.urandom(32))
        self.log_path = root / f"cometbft-{i}.log"
        init_home(self.home, abci_addr=f"tcp://127.0.0.1:{self.abci_port}", rpc_port=self.rpc_port,
                  p2p_port=self.p2p_port)
        out = subprocess.run([str(cometbft_binary()), "show-node-id", "--home", str(self.home)], check=True,
                             capture_output=True, text=True, timeout=30)
        self.node_id = cometbft.node_id(self.home)
        assert self.node_id == out.stdout.strip(), "our node id is the one CometBFT computes"
        self.pubkey = cometbft_pubkey(self.home)
        self.app: RelayAbciApp | None = None
        self.server: AbciServer | None = None
        self.proc: subprocess.Popen[Any] | None = None

    async def start(self, genesis: dict[str, Any], keys: ConsensusKeys) -> None:
        self.app = RelayAbciApp(genesis, name=self.name, key=self.key, consensus_keys=keys, data_dir=self.data_dir)
        self.server = AbciServer(self.app, port=self.abci_port, name=self.name)
        await self.server.start()
        with self.log_path.open("ab") as log_file:
            self.proc = spawn([str(cometbft_binary()), "start", "--home", str(self.home)], stdout=log_file,
                              stderr=subprocess.STDOUT)

    async def stop(self) -> None:
        if self.proc is not None:
            await asyncio.to_thread(stop, self.proc, 10)
            self.proc = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.app is not None:
            self.app.close()
            self.app = None


def four_validator_genesis(vals: list[Validator4], relay_genesis: dict[str, Any]) -> None:
    """One CometBFT genesis for the four (their consensus keys, power 1 each: the app answers the relay powers),
    and each node's peers: the other three on loopback (the package's helpers, as ``devnet init`` uses them)."""
    raw = cometbft.write_genesis(vals[0].home, chain_id=CHAIN, genesis_time_ms=int(relay_genesis["genesis_time_ms"]),
                                 app_state=relay_genesis, validators=[(v.name, v.pubkey, 1) for v in vals])
    for v in vals:
        (v.home / "config" / "genesis.json").write_bytes(raw)
        peers = tuple(f"{w.node_id}@127.0.0.1:{w.p2p_port}" for w in vals if w is not v)
        cometbft.init_home(v.home, cometbft.HomeSettings(moniker=v.name, host="127.0.0.1", abci_port=v.abci_port,
                                                         rpc_port=v.rpc_port, p2p_port=v.p2p_port,
                                                         timeout_commit_ms=500, timeout_propose_ms=2000,
                                                         persistent_peers=peers))


async def test_four_validators_certify_with_one_down_and_back(tmp_path: Path) -> None:
    base = free_port_block(12)
    vals = [Validator4(i, tmp_path, base) for i in range(4)]
    vset = ValidatorSet(tuple(Validator(v.name, v.key.ed25519_pubkey, v.key.eth_address, 1) for v in vals))
    relay_genesis = {"chain_id": CHAIN, "validators": wire.validator_set_to_json(vset), "clients": {}, "lanes": [],
                     "bonds": BONDS, "genesis_time_ms": int(time.time() * 1000) - 60_000}
    four_validator_genesis(vals, relay_genesis)
    keys = ConsensusKeys({v.name: v.pubkey for v in vals})
    try:
        for v in vals:
            await v.start(relay_genesis, keys)
        async with aiohttp.ClientSession() as session:
            rpcs = [Rpc(session, v.rpc_port) for v in vals]
            await until("height 3 on all four", lambda: _all_at(rpcs, 3), deadline_s=120)

            async def register(rpc: Rpc, name: str) -> int:
                signer = Ed25519Signer(os.urandom(32))
                tx = Tx.signed(signer, CHAIN, name, 0, "account.register", {"pubkey": signer.pubkey.hex()})
                res = await rpc.get("broadcast_tx_commit", tx="0x" + wire_bytes(tx).hex())
                assert int(res["check_tx"]["code"]) == 0 and int(res["tx_result"]["code"]) == 0, res
                return int(res["height"])

            def check_certificates(h: int, name: str, up: list[Validator4]) -> set[int]:
                signers: set[int] = set()
                for v in up:
                    assert v.app is not None
                    cert = v.app.certificate(account_path(name), h)
                    assert cert.value is not None
                    verify_certificate(vset, ChainId(CHAIN), cert, account_path(name), cert.value)
                    signers |= {s.validator_index for s in cert.commit.signatures}
                return signers

            h = await register(rpcs[2], "alice")  # submitted to one validator, gossiped to the proposers
            for v in vals:
                assert v.app is not None
                await app_reaches(v.app, h + 1)
            assert len(check_certificates(h, "alice", vals)) >= 3
            assert len({v.app.commit_at(h).header.state_root for v in vals if v.app is not None}) == 1

            await vals[3].stop()  # one validator (CometBFT and its app) down: three of four still decide
            h2 = await register(rpcs[0], "bob")
            for v in vals[:3]:
                assert v.app is not None
                await app_reaches(v.app, h2 + 1)
            assert check_certificates(h2, "bob", vals[:3]) <= {0, 1, 2}

            await vals[3].start(relay_genesis, keys)  # and back: its app resumes from its store, CometBFT syncs
            assert vals[3].app is not None
            await app_reaches(vals[3].app, h2 + 1, deadline_s=120)
            assert check_certificates(h2, "bob", [vals[3]]) <= {0, 1, 2}
            assert vals[0].app is not None
            assert vals[3].app.commit_at(h2).header == vals[0].app.commit_at(h2).header
    except BaseException:
        for v in vals:
            if v.log_path.exists():
                print(f"--- {v.name} cometbft log (tail) ---\n" + v.log_path.read_text(errors="replace")[-3000:])
        raise
    finally:
        for v in vals:
            await v.stop()


async def _all_at(rpcs: list[Rpc], height: int) -> bool:
    return all([await r.height() >= height for r in rpcs])
