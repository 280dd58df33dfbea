"""The relay state machine as an ABCI application (relay/chain/abci/app.py, SPEC §7.11), driven with hand-built
requests for a four-validator relay whose keys are made at test time (:mod:`tests.unit.abci.relaynet`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from chains.common.node import NodeConfig
from chains.common.state import canonical_json
from chains.common.tx import account_path
from protocol.certificate import RelayCommit, commit_sign_bytes, verify_certificate, verify_commit
from protocol.crypto import Ed25519Signer
from protocol.errors import (
    CodecError,
    HeaderError,
    ProtocolError,
    QuorumError,
    SignatureError,
    ValidatorSetMismatchError,
    WrongChainError,
)
from protocol.state_commitment import Proof, verify_membership
from protocol.types import ChainId
from relay.chain.abci import types as T
from relay.chain.abci.app import (
    COMMIT_ITEM_PREFIX,
    REFUSED,
    ConsensusKeys,
    cometbft_address,
    decode_commit_item,
    encode_commit_item,
    encode_extension,
)
from relay.chain.node import BftDriver, block_bytes, make_relay_node
from tests.unit.abci.relaynet import CHAIN, N, RelayNet, new_validator_key, raw, register_tx, timestamp
from tests.unit.relay_state.harness import DPOS, RelayHarness
from tests.unit.relay_state.testkit import SINGLE_SIGNER_TYPE


def check(net: RelayNet, tx: bytes, app: int = 0, recheck: bool = False) -> T.ResponseCheckTx:
    kind = T.CheckTxType.RECHECK if recheck else T.CheckTxType.NEW
    return net.apps[app].check_tx(T.RequestCheckTx(tx, kind))


# -- genesis -------------------------------------------------------------------------------------------------------


def test_init_chain_answers_the_consensus_keys_with_relay_powers_and_the_genesis_root(tmp_path: Path) -> None:
    net = RelayNet(tmp_path)
    try:
        (resp, *_) = net.init_chain()
        assert [u.pub_key.ed25519 for u in resp.validators] == net.consensus_pubkeys
        assert [u.power for u in resp.validators] == [10] * N
        assert resp.app_hash == net.apps[0].rules.genesis_hdr.state_root == net.apps[0].app_hash
        assert resp.consensus_params is not None and resp.consensus_params.abci is not None
        assert resp.consensus_params.abci.vote_extensions_enable_height == 1
        info = net.apps[0].info(T.RequestInfo())
        assert (info.last_block_height, info.last_block_app_hash) == (0, b"")
    finally:
        net.close()


@pytest.mark.parametrize(("malleate", "error"), [
    (lambda r, n: replace(r, chain_id="other-chain"), WrongChainError),
    (lambda r, n: replace(r, initial_height=5), HeaderError),
    (lambda r, n: replace(r, app_state_bytes=b"{not json"), CodecError),
    (lambda r, n: replace(r, app_state_bytes=canonical_json({**n.genesis, "lanes": [1]})), CodecError),
    (lambda r, n: replace(r, validators=r.validators[:3]), ValidatorSetMismatchError),
])
def test_init_chain_refuses_a_cometbft_genesis_that_disagrees(
        tmp_path: Path, malleate: Callable[[T.RequestInitChain, RelayNet], T.RequestInitChain],
        error: type[ProtocolError]) -> None:
    net = RelayNet(tmp_path)
    try:
        good = T.RequestInitChain(time=timestamp(net.genesis_time_ms), chain_id=CHAIN, initial_height=1,
                                  validators=net.consensus_keys.updates(net.vset),
                                  app_state_bytes=canonical_json(net.genesis))
        net.apps[0].init_chain(good)
        with pytest.raises(error):
            net.apps[1].init_chain(malleate(good, net))
    finally:
        net.close()


def test_consensus_keys_refuse_a_relay_validator_without_one(net: RelayNet) -> None:
    with pytest.raises(ValidatorSetMismatchError):
        ConsensusKeys({"v0": net.consensus_pubkeys[0]}).updates(net.vset)
    with pytest.raises(CodecError):
        ConsensusKeys({"v0": b"short"})
    with pytest.raises(CodecError):
        ConsensusKeys({"v0": net.consensus_pubkeys[0], "v1": net.consensus_pubkeys[0]})


# -- CheckTx -------------------------------------------------------------------------------------------------------


def test_check_tx_admits_a_registration_and_refuses_it_again(net: RelayNet) -> None:
    tx = raw(register_tx("alice"))
    assert check(net, tx).code == 0
    again = check(net, tx)  # the check state holds the first: a second is redundant before it takes block space
    assert (again.code, again.codespace) == (REFUSED, "packet.replay")
    assert json.loads(again.log)["code"] == "packet.replay"
    assert check(net, tx, app=1).code == 0, "another validator's check state is its own"


@pytest.mark.parametrize(("make", "codespace"), [
    (lambda: raw(register_tx("mallory", sign_with=Ed25519Signer(bytes(range(32))))), "signature.invalid"),
    (lambda: raw(register_tx("alice", chain="other-relay")), "packet.wrong_chain"),
    (lambda: b"not json", "codec.invalid"),
    (lambda: json.dumps(register_tx("alice").to_json(), indent=1).encode(), "codec.invalid"),  # not canonical
    (lambda: b"[1, 2]", "codec.invalid"),
    (lambda: COMMIT_ITEM_PREFIX + b"{}", "codec.invalid"),
])
def test_check_tx_refusals_carry_the_typed_code(net: RelayNet, make: Callable[[], bytes], codespace: str) -> None:
    before = net.apps[0]._check_state.root
    resp = check(net, make())
    assert (resp.code, resp.codespace) == (REFUSED, codespace), resp.log
    assert net.apps[0]._check_state.root == before


def test_recheck_after_the_block_refuses_what_the_block_included(net: RelayNet) -> None:
    alice, bob = raw(register_tx("alice")), raw(register_tx("bob"))
    assert check(net, alice).code == 0 and check(net, bob).code == 0
    net.run([alice])
    assert check(net, alice, recheck=True).codespace == "packet.replay"
    assert check(net, bob, recheck=True).code == 0, "the check state was reset at Commit"


# -- a block with a real relay op ----------------------------------------------------------------------------------


def test_a_registration_block_executes_and_its_value_is_proven(net: RelayNet) -> None:
    signer = Ed25519Signer(bytes(32))
    items = net.run([raw(register_tx("alice", signer))])
    assert net.height == 1 and len(items) == 1, "height 1 has no commit item"
    res = net.results[1]
    assert [r.code for r in res.tx_results] == [0]
    assert res.app_hash == net.apps[0].app_hash
    key = account_path("alice")
    q = net.apps[2].query(T.RequestQuery(data=key, path="/key", prove=True))
    assert q.code == 0 and q.height == 1 and json.loads(q.value)["pubkey"] == signer.pubkey.hex()
    assert q.proof_ops is not None
    (op,) = q.proof_ops.ops
    verify_membership(res.app_hash, key, q.value, Proof.decode(op.data))
    absent = net.apps[2].query(T.RequestQuery(data=b"no/such/key", path="store"))
    assert (absent.code, absent.value, absent.info) == (0, b"", "absent")
    unknown = net.apps[2].query(T.RequestQuery(data=key, path="/nope"))
    assert (unknown.code, unknown.codespace) == (REFUSED, "rpc.not_found")


def test_a_failing_transaction_in_a_decided_block_is_a_non_zero_result(net: RelayNet) -> None:
    """ProcessProposal refuses it; a block decided anyway (a replay of a byzantine majority's block) records it."""
    dup = raw(register_tx("alice"))
    net.run([])
    items = (*net.prepare([]), dup, dup)
    assert net.process(net.apps[0], items) == T.ProposalStatus.REJECT
    net.finalize(items)
    assert [r.code for r in net.results[2].tx_results] == [0, 0, REFUSED]
    assert net.results[2].tx_results[2].codespace == "packet.replay"


def test_prepare_proposal_drops_failing_and_redundant_transactions(net: RelayNet) -> None:
    alice = raw(register_tx("alice"))
    forged = raw(register_tx("eve", sign_with=Ed25519Signer(bytes(range(32)))))
    items = net.prepare([b"garbage", alice, forged, alice, raw(register_tx("bob"))])
    assert items[0] == alice and len(items) == 2
    small = net.apps[0].prepare_proposal(T.RequestPrepareProposal(max_tx_bytes=len(alice) - 1, txs=(alice,), height=1,
                                                                  time=net.time_of(1)))
    assert small.txs == (), "max_tx_bytes bounds the proposal"


# -- the app hash is the built-in engine's state root ---------------------------------------------------------------


def test_the_app_hash_is_the_builtin_engines_state_root_for_the_same_transactions(net: RelayNet,
                                                                                 tmp_path: Path) -> None:
    txs = [register_tx("alice"), register_tx("bob")]
    net.run([raw(t) for t in txs])
    ours = net.apps[0].tip
    node = make_relay_node(net.genesis, "builtin", net.keys[0], NodeConfig(name="builtin", data_dir=tmp_path / "b"))
    try:
        driver = BftDriver(node.rules, node)  # type: ignore[arg-type]
        assert driver.validate_block(ours.header.header, block_bytes(txs)), "the built-in engine agrees on the header"
        for t in txs:
            node.submit_tx(t)
        made = driver.make_block(1, 0)
        assert made is not None
        assert made[1].state_root == net.results[1].app_hash
        assert made[1].data_hash == ours.header.header.data_hash
    finally:
        node.db.close()


# -- vote extensions -----------------------------------------------------------------------------------------------


def test_vote_extensions_verify_and_forgeries_are_refused(net: RelayNet) -> None:
    items = net.prepare([raw(register_tx("alice"))])
    for app in net.apps:
        assert net.process(app, items) == T.ProposalStatus.ACCEPT
    ext = net.extend(1, items)
    assert len(ext) == 64 + 65
    assert net.verify(0, 1, items, ext) == T.VerifyStatus.ACCEPT
    header = net.apps[0]._executed[net.block_hash(items)].entry.header.header
    other = replace(header, state_root=bytes(32))
    digest = commit_sign_bytes(other, 0)
    wrong_header = encode_extension(net.keys[1].sign_ed25519(digest), net.keys[1].sign_secp256k1(digest))
    flipped = bytes([ext[0] ^ 1]) + ext[1:]
    good_ed_bad_secp = ext[:64] + wrong_header[64:]
    cases = {"wrong header": (1, wrong_header), "flipped": (1, flipped),
             "secp over another header": (1, good_ed_bad_secp), "ed25519 only": (1, ext[:64]),
             "malformed": (1, ext[:10]), "another's extension": (2, ext)}
    for what, (signer, e) in cases.items():
        assert net.verify(0, signer, items, e) == T.VerifyStatus.REJECT, what
    req = T.RequestVerifyVoteExtension(hash=net.block_hash(items), validator_address=b"\x01" * 20, height=1,
                                       vote_extension=ext)
    assert net.apps[0].verify_vote_extension(req).status == T.VerifyStatus.REJECT, "unknown CometBFT validator"
    assert net.apps[0].verify_vote_extension(replace(req, validator_address=net.address(1), height=5)).status == \
        T.VerifyStatus.REJECT, "another height"


@pytest.mark.parametrize(("req_of", "error"), [
    (lambda n, ext: dict(validator_address=b"\x01" * 20, vote_extension=ext), ValidatorSetMismatchError),
    (lambda n, ext: dict(validator_address=n.address(1), vote_extension=ext[:63]), CodecError),
    (lambda n, ext: dict(validator_address=n.address(2), vote_extension=ext), SignatureError),
    (lambda n, ext: dict(validator_address=n.address(1), vote_extension=ext, height=7), HeaderError),
])
def test_extension_refusals_are_typed(net: RelayNet, req_of: Callable[[RelayNet, bytes], dict[str, object]],
                                      error: type[ProtocolError]) -> None:
    items = net.prepare([])
    net.process(net.apps[0], items)
    ext = net.extend(1, items)
    fields: dict[str, object] = {"hash": net.block_hash(items), "height": 1, **req_of(net, ext)}
    req = T.RequestVerifyVoteExtension(**fields)  # type: ignore[arg-type]
    with pytest.raises(error):
        net.apps[0].check_extension(req)


def test_an_extension_for_a_block_not_yet_executed_is_checked_for_form_and_signer_only(net: RelayNet) -> None:
    items = net.prepare([])
    net.process(net.apps[1], items)
    ext = net.extend(1, items)
    assert net.verify(0, 1, items, ext) == T.VerifyStatus.ACCEPT  # app 0 has not seen the proposal
    assert net.verify(0, 1, items, ext[:20]) == T.VerifyStatus.REJECT


def test_extend_vote_runs_a_block_it_did_not_process(net: RelayNet) -> None:
    items = net.prepare([raw(register_tx("alice"))])
    ext = net.extend(3, items)  # CometBFT may skip ProcessProposal of the proposer's own block
    assert net.process(net.apps[0], items) == T.ProposalStatus.ACCEPT
    assert net.verify(0, 3, items, ext) == T.VerifyStatus.ACCEPT


# -- the commit item and the certificate ---------------------------------------------------------------------------


def test_the_next_proposal_carries_the_commit_and_the_certificate_verifies(net: RelayNet) -> None:
    net.run([raw(register_tx("alice"))])
    with pytest.raises(ProtocolError):
        net.apps[0].certificate(account_path("alice"))  # height 1's commit comes with height 2
    items = net.run([raw(register_tx("bob"))])
    commit = decode_commit_item(items[0])
    assert commit.header.height == 1 and len(commit.signatures) == N
    assert [r.code for r in net.results[2].tx_results] == [0, 0]
    assert net.results[2].tx_results[0].log == "relay commit of height 1"
    genesis_set = net.vset
    for app in net.apps:
        cert = app.certificate(account_path("alice"))
        assert cert.commit == commit
        verify_commit(genesis_set, ChainId(CHAIN), cert.commit)
        assert cert.value is not None
        verify_certificate(genesis_set, ChainId(CHAIN), cert, account_path("alice"), cert.value)
        assert cert.commit.header.state_root == net.results[1].app_hash, "the certificate of H covers H's app hash"
    q = net.apps[1].query(T.RequestQuery(data=account_path("alice"), path="/certificate"))
    assert q.code == 0 and q.height == 1
    absent = net.apps[1].certificate(account_path("bob"))  # bob registered at height 2: absent at height 1
    verify_certificate(genesis_set, ChainId(CHAIN), absent, account_path("bob"), None)


def _commit_with(net: RelayNet, signers: list[int]) -> RelayCommit:
    items = net.prepare([])
    commit = decode_commit_item(items[0])
    return replace(commit, signatures=tuple(s for s in commit.signatures if s.validator_index in signers))


def test_the_commit_item_needs_more_than_two_thirds(net: RelayNet) -> None:
    net.run([])
    three = _commit_with(net, [0, 1, 3])
    assert net.process(net.apps[2], (encode_commit_item(three),)) == T.ProposalStatus.ACCEPT
    two = _commit_with(net, [0, 1])
    assert net.process(net.apps[2], (encode_commit_item(two),)) == T.ProposalStatus.REJECT
    with pytest.raises(QuorumError):
        net.apps[2].check_commit(two)


def _bad_sig(c: RelayCommit) -> RelayCommit:
    s = c.signatures[0]
    return replace(c, signatures=(replace(s, ed25519_sig=bytes(64)), *c.signatures[1:]))


@pytest.mark.parametrize(("malleate", "error"), [
    (lambda items, c: items[1:], HeaderError),  # no commit item
    (lambda items, c: (encode_commit_item(_bad_sig(c)),), SignatureError),
    (lambda items, c: (encode_commit_item(replace(c, header=replace(c.header, state_root=bytes(32)))),), HeaderError),
    (lambda items, c: (encode_commit_item(replace(c, round=1)),), HeaderError),
    (lambda items, c: (encode_commit_item(replace(c, signatures=c.signatures[:2])),), QuorumError),
    (lambda items, c: (encode_commit_item(replace(c, signatures=(c.signatures[0],) * 3)),), SignatureError),
    (lambda items, c: (COMMIT_ITEM_PREFIX + b"{}",), CodecError),
    (lambda items, c: (COMMIT_ITEM_PREFIX + json.dumps(json.loads(items[0][len(COMMIT_ITEM_PREFIX):]),
                                                        indent=1).encode(),), CodecError),
    (lambda items, c: (*items, items[0]), CodecError),  # a second commit item, as a transaction
    (lambda items, c: (*items, b"{}"), CodecError),
    (lambda items, c: (*items, raw(register_tx("xavier", sign_with=Ed25519Signer(bytes(32))))), SignatureError),
])
def test_proposal_refusals_are_typed(net: RelayNet,
                                     malleate: Callable[[tuple[bytes, ...], RelayCommit], tuple[bytes, ...]],
                                     error: type[ProtocolError]) -> None:
    net.run([])
    items = net.prepare([])
    bad = malleate(items, decode_commit_item(items[0]))
    with pytest.raises(error):
        net.apps[1].execute(bad, 2, net.time_of(2), strict=True)
    assert net.process(net.apps[1], bad) == T.ProposalStatus.REJECT
    assert net.process(net.apps[1], items) == T.ProposalStatus.ACCEPT


def test_a_proposer_without_a_quorum_of_extensions_proposes_nothing(net: RelayNet) -> None:
    net.run([])
    few = net.last_votes[:2]
    assert net.prepare([raw(register_tx("alice"))], votes=few) == ()
    assert net.process(net.apps[0], ()) == T.ProposalStatus.REJECT


def test_a_height_decided_with_three_extensions_is_certified_by_three(net: RelayNet) -> None:
    net.decide(net.prepare([]), signers=[0, 1, 2])
    items = net.run([])
    assert [s.validator_index for s in decode_commit_item(items[0]).signatures] == [0, 1, 2]


# -- restart and replay --------------------------------------------------------------------------------------------


def test_a_restarted_app_resumes_from_its_store(net: RelayNet) -> None:
    """Blocks are stored with their commits: the last committed block, whose commit the next block brings, is held in
    memory, so a restarted app reports the height below it and CometBFT replays it (FinalizeBlock and Commit)."""
    for _ in range(3):
        net.run([raw(register_tx(f"acct{net.height}"))])
    app_hash, height = net.apps[0].app_hash, net.height
    stored_hash = net.apps[0].node.head.header.state_root
    assert net.apps[0].stored_height == height - 1 and stored_hash == net.results[height - 1].app_hash
    net.apps[0].close()
    net.apps[0] = net.open(0)
    info = net.apps[0].info(T.RequestInfo())
    assert (info.last_block_height, info.last_block_app_hash) == (height - 1, stored_hash)
    block_hash, items, t = net.blocks[-1]
    replayed = net.apps[0].finalize_block(T.RequestFinalizeBlock(txs=items, hash=block_hash, height=height, time=t))
    net.apps[0].commit(T.RequestCommit())
    assert replayed.app_hash == app_hash == net.apps[0].app_hash and net.apps[0].height == height
    assert net.apps[0].commit_at(2) == net.apps[1].commit_at(2), "the commits were stored with their blocks"
    net.run([raw(register_tx("later"))], proposer=0)  # and it goes on with the others
    assert net.apps[0].app_hash == net.apps[1].app_hash


def test_cometbft_replaying_finalized_blocks_reaches_the_same_state(net: RelayNet, tmp_path: Path) -> None:
    """After a crash CometBFT replays the blocks the app lacks with FinalizeBlock and Commit only."""
    for _ in range(3):
        net.run([raw(register_tx(f"acct{net.height}"))])
    fresh = net.open(0, tmp_path / "fresh")
    try:
        fresh.init_chain(T.RequestInitChain(time=timestamp(net.genesis_time_ms), chain_id=CHAIN, initial_height=1))
        for h, (block_hash, items, t) in enumerate(net.blocks, start=1):
            resp = fresh.finalize_block(T.RequestFinalizeBlock(txs=items, hash=block_hash, height=h, time=t))
            assert resp.app_hash == net.results[h].app_hash
            fresh.commit(T.RequestCommit())
        assert fresh.commit_at(2) == net.apps[0].commit_at(2)
    finally:
        fresh.close()


def test_a_decided_block_with_a_bad_commit_item_stops_the_app(net: RelayNet) -> None:
    net.run([])
    items = net.prepare([])
    bad = (encode_commit_item(_bad_sig(decode_commit_item(items[0]))),)
    with pytest.raises(SignatureError):
        net.apps[0].finalize_block(T.RequestFinalizeBlock(txs=bad, hash=b"\x09" * 32, height=2, time=net.time_of(2)))
    with pytest.raises(HeaderError):
        net.apps[0].commit(T.RequestCommit())


# -- admission of relays: the relay's redundancy rule ----------------------------------------------------------------


def test_two_relayers_racing_one_client_update_the_second_is_refused_at_check_tx(tmp_path: Path) -> None:
    """The relay's admission (``check_admission``: redundant relays refused before they take block space), not only
    execution: a header the client already holds would execute without error, as a wasted transaction. Two updates
    that both passed CheckTx reach one proposal: the second stays in the block as a no-op that uses its nonce."""
    h = RelayHarness(trusting_period_ms=10 * 365 * 86_400_000)
    net = RelayNet(tmp_path, extra_genesis={k: v for k, v in h.genesis.items() if k != "validators"},
                   client_types=[SINGLE_SIGNER_TYPE])
    h.net.now_ms = net.genesis_time_ms  # the park header's time: before the relay block's
    try:
        net.init_chain()
        _, args = h.header_args(DPOS)
        first, second = raw(h.tx("client.update", args, "relayer-a")), raw(h.tx("client.update", args, "relayer-b"))
        assert check(net, first).code == 0
        refused = check(net, second)
        assert (refused.code, refused.codespace) == (REFUSED, "packet.replay"), refused.log
        forged = h.tx("client.update", args, "relayer-b")
        forged = raw(type(forged)(forged.chain_id, forged.sender, forged.nonce, forged.op, forged.args, bytes(64)))
        assert check(net, forged).codespace == "packet.replay", "redundancy is refused before any signature work"
        items = net.run([first, second])
        assert items == (first, second), "the proposer keeps the second as a no-op that uses its nonce"
        assert [r.code for r in net.results[1].tx_results] == [0, 0]
        assert net.results[1].tx_results[1].log == "redundant no-op: packet.replay"
        assert check(net, second, recheck=True).codespace == "packet.replay"
    finally:
        net.close()


def test_relay_time_follows_cometbft_time_and_always_increases(net: RelayNet) -> None:
    """CometBFT gives height 1 its genesis time, which may be before the relay genesis's ``genesis_time_ms``."""
    early = net.apps[0].execute((), 1, timestamp(net.genesis_time_ms - 5000), strict=True)
    assert early.entry.header.timestamp_ms == net.genesis_time_ms + 1
    later = net.apps[0].execute((), 1, timestamp(net.genesis_time_ms + 1234), strict=True)
    assert later.entry.header.timestamp_ms == net.genesis_time_ms + 1234


def test_a_cometbft_validator_outside_the_relay_set_extends_with_nothing(tmp_path: Path) -> None:
    """The window a jailing opens: the relay's set shrinks at H+1, CometBFT's at H+2. Here "v4" has a CometBFT key
    and no relay seat: its precommits count for CometBFT, only with an empty extension."""
    net = RelayNet(tmp_path)
    outsider = Ed25519Signer(bytes(range(1, 33)))
    keys = ConsensusKeys({**net.consensus_keys.by_name, "v4": outsider.pubkey})
    app = net.apps[0]
    app.consensus_keys = keys
    try:
        net.init_chain()
        items = net.prepare([])
        assert net.process(app, items) == T.ProposalStatus.ACCEPT
        req = T.RequestVerifyVoteExtension(hash=net.block_hash(items), validator_address=cometbft_address(
            outsider.pubkey), height=1, vote_extension=b"")
        assert app.verify_vote_extension(req).status == T.VerifyStatus.ACCEPT
        with pytest.raises(ValidatorSetMismatchError):
            app.check_extension(replace(req, vote_extension=net.extend(1, items)))
        outside = net.open(0, tmp_path / "outsider")
        outside.key, outside.name = new_validator_key(), "v4"  # a validator without a relay seat: it signs nothing
        try:
            outside.init_chain(T.RequestInitChain(time=timestamp(net.genesis_time_ms), chain_id=CHAIN,
                                                  initial_height=1))
            ext = outside.extend_vote(T.RequestExtendVote(hash=net.block_hash(items), height=1,
                                                          time=net.time_of(1), txs=items))
            assert ext.vote_extension == b""
        finally:
            outside.close()
    finally:
        net.close()


def test_the_relay_node_holds_blocks_with_their_commits_only(net: RelayNet) -> None:
    """What the relay RPC serves (heads, headers, certificates) is the built-in engine's chain: no block without its
    commit; the block CometBFT committed last waits in memory for the next one."""
    for _ in range(4):
        net.run([raw(register_tx(f"acct{net.height}"))])
    app = net.apps[1]
    assert (app.height, app.stored_height, app.node.head.header.height) == (4, 3, 3)
    assert all(app.node.canonical(h).header.commit is not None for h in range(1, 4))  # type: ignore[union-attr]
    assert app.node.canonical(4) is None and app.tip.header.commit is None
    assert app.certificate(account_path("acct3")).commit.header.height == 3
