"""Light-client and state-proof throughput on one core.

    python bench/light_clients.py [--json] [--runs 5] [--dpos-headers 10000] [--poc-headers 1000] [--eth-headers 4000]

Prints medians over ``--runs`` runs:
  dpos_headers_per_s                 DPoS light client: headers validated+applied per second (21 witnesses)
  poc_headers_per_s                  PoC light client: headers (chiapos proof of space) per second
  eth_headers_per_s                  Ethereum light client: headers held then made final per second, fed in batches
                                     of 16 as a relayer does, each batch's top header attested by a quorum first
  state_membership_proofs_per_s      sparse-Merkle membership proofs verified per second, 100k-key state
  state_nonmembership_proofs_per_s   non-membership proofs verified per second, same state
  eth_storage_proofs_per_s           Ethereum storage proofs (eth_getProof form: account proof + storage proof,
                                     both walked, no cache) verified per second; 10k accounts, 10k bridge slots
  fabric_blocks_per_s                Fabric light client: blocks (header + one etcdraft consenter signature,
                                     data stripped) decoded, validated and applied per second, 3 consenters
  fabric_attestations_per_s          Fabric attestation bundles (2 peers, AND policy) decoded and verified per
                                     second: statements, identities (cached per config), 2 ECDSA P-256 verifies
  fabric_attestations_cold_per_s     the same with every identity new to the client (chain, OUs, CRLs each time)
Targets (issue #2): >= 5,000 DPoS headers/s, >= 100 PoC headers/s, >= 10,000 membership proofs/s;
(issue 4): >= 2,000 Ethereum storage proofs/s; (issue 11): >= 500 Fabric blocks/s, >= 2,000 attestations/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit
from chains.common import progress
from protocol.state_commitment import SparseMerkleTree, verify_membership, verify_non_membership


def _pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _median_rate(runs: int, n: int, fn: Callable[[], None]) -> float:
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_state(runs: int, n_keys: int = 100_000, n_proofs: int = 5_000) -> dict[str, float]:
    tree = SparseMerkleTree.from_items((f"balances/acct-{i}/kWh".encode(), str(i).encode()) for i in range(n_keys))
    root = tree.root
    step = n_keys // n_proofs
    present = [(f"balances/acct-{i}/kWh".encode(), str(i).encode()) for i in range(0, n_keys, step)][:n_proofs]
    mem = [(k, v, tree.prove(k)) for k, v in present]
    absent = [f"receipts/poc-park/lane-0/{i}".encode() for i in range(n_proofs)]
    non = [(k, tree.prove(k)) for k in absent]

    def run_mem() -> None:
        for k, v, p in mem:
            verify_membership(root, k, v, p)

    def run_non() -> None:
        for k, p in non:
            verify_non_membership(root, k, p)

    return {
        "state_keys": n_keys,
        "state_membership_proofs_per_s": _median_rate(runs, len(mem), run_mem),
        "state_nonmembership_proofs_per_s": _median_rate(runs, len(non), run_non),
    }


def bench_dpos(runs: int, n_headers: int) -> dict[str, float]:
    from chains.dpos.light_client import DposLightClient
    from chains.dpos.testing import make_chain
    from protocol.types import ClientId

    client_args, headers = make_chain(n_headers, n_witnesses=21)

    def run() -> None:
        client = DposLightClient(client_id=ClientId("dpos-0"), **client_args)
        for h in headers:
            client.process_header(h, h.timestamp_ms)

    return {"dpos_headers_per_s": _median_rate(runs, len(headers), run), "dpos_witnesses": 21}


def bench_poc(runs: int, n_headers: int) -> dict[str, float]:
    from chains.poc.light_client import PocLightClient
    from chains.poc.testing import make_chain
    from protocol.types import ClientId

    client_args, headers = make_chain(n_headers, n_farmers=2)

    def run() -> None:
        client = PocLightClient(client_id=ClientId("poc-0"), **client_args)
        for h in headers:
            client.process_header(h, h.timestamp_ms)

    return {"poc_headers_per_s": _median_rate(runs, len(headers), run)}


def bench_eth_headers(runs: int, n_headers: int, batch: int = 16) -> dict[str, float]:
    """The Ethereum client's header path (link checks, pending pool, finality through parentHash, pruning): a
    linear chain fed upward from finality in batches; a quorum of 3 of 4 validators attests each batch's top header
    before the batch, so the batch waits as pending and becomes final with its top header."""
    from chains.ethereum.light_client import EthereumLightClient
    from chains.ethereum.proofs import EMPTY_TRIE_ROOT
    from chains.ethereum.types import EthHeader, keccak256
    from protocol.types import ChainId, ClientId

    t0 = 1_790_000_000
    headers: list[EthHeader] = []
    parent = bytes(32)
    for number in range(1, n_headers + 1):
        header = EthHeader(
            parent_hash=parent, ommers_hash=keccak256(b"\xc0"), coinbase=bytes(20),
            state_root=keccak256(b"state %d" % number), transactions_root=EMPTY_TRIE_ROOT,
            receipts_root=EMPTY_TRIE_ROOT, logs_bloom=bytes(256), difficulty=0, number=number, gas_limit=30_000_000,
            gas_used=0, timestamp=t0 + number, extra_data=b"", mix_hash=bytes(32), nonce=bytes(8),
            base_fee_per_gas=10**9, withdrawals_root=EMPTY_TRIE_ROOT, blob_gas_used=0, excess_blob_gas=0,
            parent_beacon_block_root=bytes(32), requests_hash=keccak256(b""))
        headers.append(header)
        parent = header.hash
    batches = [headers[i:i + batch] for i in range(0, len(headers), batch)]

    def run() -> None:
        client = EthereumLightClient(ClientId("ethereum-0"), ChainId("eth-park"), 10**12, eth_chain_id=31337,
                                     bridge_address=bytes(20), confirmation_depth=2, max_consensus_states=512,
                                     max_pending_headers=1024)
        for group in batches:
            top = group[-1]
            for name in ("v0", "v1", "v2"):
                client.attest(name, 1, 4, top.height, top.hash, top.height + 2, top.timestamp_ms)
            for h in group:
                client.process_header(h, h.timestamp_ms)
        if client.final_height != n_headers:
            raise RuntimeError(f"ethereum bench: final height {client.final_height}, expected {n_headers}")

    return {"eth_headers_per_s": _median_rate(runs, len(headers), run)}


def bench_eth(runs: int, n_accounts: int = 10_000, n_slots: int = 10_000, n_proofs: int = 2_000) -> dict[str, float]:
    """Membership proofs of bridge commitments against a synthetic state built with the ``trie`` package (the
    state of a busy devnet: ~6 account-proof and ~5 storage-proof nodes). Each verification decodes the proof
    bytes, walks the account proof to the bridge's storageRoot and the storage proof to the value."""
    import random

    import rlp
    from trie import HexaryTrie

    from chains.ethereum.proofs import EMPTY_TRIE_ROOT, EthStorageProof, storage_slot_of_path
    from chains.ethereum.proofs import verify_membership as eth_verify_membership
    from chains.ethereum.types import keccak256

    rng = random.Random(4)
    bridge = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")
    storage = HexaryTrie({})
    records = [(f"commitments/dpos-park/lane-0/{i}".encode(), keccak256(b"%d" % i)) for i in range(1, n_slots + 1)]
    for path, value in records:
        storage[keccak256(storage_slot_of_path(path))] = rlp.encode(value.lstrip(b"\x00"))
    accounts = HexaryTrie({})
    for _ in range(n_accounts):
        accounts[keccak256(rng.randbytes(20))] = rlp.encode([b"", b"\x01", EMPTY_TRIE_ROOT, keccak256(b"")])
    accounts[keccak256(bridge)] = rlp.encode([b"\x01", b"", storage.root_hash, keccak256(b"code")])
    root = accounts.root_hash
    account_proof = tuple(rlp.encode(n) for n in accounts.get_proof(keccak256(bridge)))
    step = max(1, n_slots // n_proofs)
    items = [(path, value, EthStorageProof(account_proof, tuple(
        rlp.encode(n) for n in storage.get_proof(keccak256(storage_slot_of_path(path))))).encode())
             for path, value in records[::step][:n_proofs]]

    def run() -> None:
        for path, value, proof in items:
            eth_verify_membership(root, bridge, path, value, proof)

    return {"eth_storage_proofs_per_s": _median_rate(runs, len(items), run)}


def bench_fabric(runs: int, n_blocks: int = 2_000, n_attestations: int = 2_000) -> dict[str, float]:
    from chains.fabric.consts import OPERATOR_MSP, SALES_MSP
    from chains.fabric.proto import Block
    from chains.fabric.testing import T0_MS, FabricNet

    net = FabricNet.new(n_orderers=3)
    raw_blocks = [net.next_block().encode() for _ in range(n_blocks)]

    def run_blocks() -> None:
        client = net.client()
        for i, raw in enumerate(raw_blocks):
            client.process_header(Block.decode(raw), T0_MS + i)

    client = net.client()
    key = b"receipts/dpos-park/lane-0/%d"
    ack = bytes(range(32))
    bundles = [(key % i, net.attest(key % i, ack)) for i in range(n_attestations)]

    def run_attest() -> None:
        for k, bundle in bundles:
            client.verify_membership(0, k, ack, bundle, T0_MS)

    # cold: a fresh peer per bundle for each organisation, so no identity is ever cached
    cold_n = max(1, n_attestations // 10)
    ops, sales = net.peer_orgs[OPERATOR_MSP], net.peer_orgs[SALES_MSP]
    cold = [(key % i, net.attest(key % i, ack, peers=[ops.node(f"p{i}.op", "peer"), sales.node(f"p{i}.sa", "peer")]))
            for i in range(cold_n)]

    def run_cold() -> None:
        fresh = net.client()
        for k, bundle in cold:
            fresh.verify_membership(0, k, ack, bundle, T0_MS)

    return {"fabric_blocks_per_s": _median_rate(runs, n_blocks, run_blocks),
            "fabric_attestations_per_s": _median_rate(runs, n_attestations, run_attest),
            "fabric_attestations_cold_per_s": _median_rate(runs, cold_n, run_cold)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dpos-headers", type=int, default=10_000)
    ap.add_argument("--poc-headers", type=int, default=1000)
    ap.add_argument("--eth-headers", type=int, default=4000)
    args = ap.parse_args()
    _pin_one_core()
    out: dict[str, float] = {}
    sections: list[tuple[str, Callable[[], dict[str, float]]]] = [
        ("DPoS headers", lambda: bench_dpos(args.runs, args.dpos_headers)),
        ("PoC headers", lambda: bench_poc(args.runs, args.poc_headers)),
        ("Ethereum headers", lambda: bench_eth_headers(args.runs, args.eth_headers)),
        ("state proofs", lambda: bench_state(args.runs)),
        ("Ethereum storage proofs", lambda: bench_eth(args.runs)),
        ("Fabric blocks and attestations", lambda: bench_fabric(args.runs)),
    ]
    with progress.bar("light clients", total=len(sections), json_mode=args.json) as bar:
        for label, section in sections:
            bar.update(description=f"light clients: {label}")
            out |= section()
            bar.advance()
    out = {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}
    emit(out, args.json, width=36)
    return 0


if __name__ == "__main__":
    sys.exit(main())
