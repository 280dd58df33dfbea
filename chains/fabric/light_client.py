"""Light client of a Fabric park, client type ``fabric`` (SPEC.md §8.7; §8 for the interface). Pure: no I/O, no clock.

It follows the Weaver model: **blocks** by hash chain and the orderers' signatures, checked against the consenters and
the orderer organisations' MSPs of the channel config it tracks; **state** by attestations of the bridge chaincode's
peers (:mod:`chains.fabric.attestation`), checked against the application organisations' MSPs of that config.

* **Headers are blocks** (``common.Block`` bytes, :class:`~chains.fabric.proto.Block`): the header and the SIGNATURES
  metadata always, the data only for config blocks (a relayer strips the data of every other block). Block ``n + 1``
  must have ``previous_hash`` = the hash of the client's block ``n`` (:class:`UnknownParentError` for a block further
  ahead: feed them in order), at least :attr:`~chains.fabric.config.ChannelConfig.required_signatures` valid consenter
  signatures under the current config (:mod:`chains.fabric.config` says how a signer maps to a consenter), each over
  ``Metadata.value || signature_header || BlockHeader.asn1()`` (``protoutil.BlockHeaderBytes``, as Fabric's
  ``BlockWriter`` signs and its peers verify). The signed ``Metadata.value`` is an ``OrdererBlockMetadata`` whose
  ``last_config`` index is the block's own number for a config block and the current config block's number for any
  other: so a config block can never be skipped or stripped of its data unnoticed.
* **Config blocks** carry their data: it must match the header's ``data_hash`` and hold one CONFIG transaction of
  this channel whose sequence is above the current one; its MSPs, CRLs and consenters replace the current config
  from the next block on (the config block itself is signed under the previous config). The client keeps the newest
  ``max_configs`` configs, to judge conflicting blocks at recent heights.
* **Finality**: a block is final once ordered — Fabric's ordering service does not fork — so every accepted block is
  final at once and there is no pending tree.
* **Consensus state**: Fabric commits no state root and no block time anyone but the transaction's client chose. The
  client records ``state_root = header_hash`` (nothing is ever proven against it) and ``timestamp_ms`` = the relay's
  time when it accepted the block (the trusted block: ``trusted_time_ms`` from the init args). So ``status`` expires a
  client that was shown no block for ``trusting_period_ms`` of relay time: a Fabric park must produce a block at
  least that often (relayers make one when a channel is quiet), or the config the client checks identities against
  may be stale.
* **Proofs** (hazard 1): :meth:`FabricLightClient.verify_membership` and ``verify_non_membership`` verify an
  attestation bundle against the **newest** config; the height must be a final block the client holds
  (``header.not_final``), but an attestation speaks of the peers' committed state when they answered, bounded in age
  by ``max_attestation_age_ms`` (hazard 3), not of that block. Nothing is ever read out of a block's transactions.
* **Timeouts** (hazard 2): :meth:`FabricLightClient.verify_timeout` accepts only an attestation that the receipt path
  holds :data:`chains.fabric.consts.TIMEOUT_RECEIPT`, the sentinel the bridge chaincode writes once its endorsing
  peers' own clocks say the timeout has passed (and each statement's ``time_ms`` at or past the timeout); an
  attestation of absence is refused (``proof.fabric.statement``), and no block or transaction time is ever used.
* **Misbehaviour** (hazard 4): two blocks at one height that both extend the block the client holds below it and
  are both validly signed by consenters of the config in force there freeze the client — through
  :meth:`~protocol.light_client.LightClient.check_misbehaviour`, or when such a block arrives at a height the client
  holds (:meth:`~FabricLightClient.validate_header` raises ``client.misbehaviour``; ``process_header`` freezes).
  Copies of one block signed by different orderers have one header hash and are the same block.

Identities (orderers and peers) count only if valid at the relay's ``now_ms`` and not revoked by their MSP's CRLs in
the tracked config (:mod:`chains.fabric.msp`). A client that fell behind across an orderer certificate's expiry
refuses the old blocks it signed: operators replace it with a client trusting a newer config block.

Persistence: :meth:`~FabricLightClient.to_state` is canonical JSON::

    {"v": 1, "type": "fabric", "base": protocol.light_client.base_state_to_json(client),
     "channel_id", "chaincode", "policy_orgs": [...], "max_attestation_age_ms", "max_clock_skew_ms", "max_configs",
     "last_config_index",
     "configs": [[config block number, ConfigEnvelope hex], ...]}      # ascending, the newest is current

Pre-conditions (as ibc-go states them): the host calls :meth:`~protocol.light_client.LightClient.process_header`;
:meth:`~FabricLightClient.apply_header` requires that :meth:`~FabricLightClient.validate_header` just accepted the same
block (it carries the relay time and the parsed config over).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Self

from chains.common.state import canonical_json
from chains.fabric.attestation import AttestationPolicy, Statement, verify_attestation
from chains.fabric.config import ChannelConfig
from chains.fabric.consts import BRIDGE_CHAINCODE, PEER_ORGS, TIMEOUT_RECEIPT
from chains.fabric.errors import BlockSignerError, ChannelConfigError, StatementError
from chains.fabric.proto import (
    SIGNATURES_INDEX,
    Block,
    Metadata,
    OrdererBlockMetadata,
    SerializedIdentity,
    SignatureHeader,
    data_hash,
)
from protocol.errors import (
    CodecError,
    HeaderError,
    MisbehaviourError,
    SignatureError,
    TimeoutExpiredError,
)
from protocol.light_client import (
    ConsensusState,
    HeaderReplayError,
    LightClient,
    UnknownParentError,
    base_state_to_json,
    open_state,
    restore_base_state,
)
from protocol.types import ChainId, ClientId, check_id

__all__ = [
    "DEFAULT_MAX_ATTESTATION_AGE_MS",
    "DEFAULT_MAX_CLOCK_SKEW_MS",
    "DEFAULT_MAX_CONFIGS",
    "HOSTED_MAX_CONSENSUS_STATES",
    "PARAM_RANGES",
    "STATE_VERSION",
    "FabricLightClient",
]

STATE_VERSION: Final = 1
"""Version of the :meth:`FabricLightClient.to_state` encoding."""
DEFAULT_MAX_ATTESTATION_AGE_MS: Final = 60_000
"""Default ``max_attestation_age_ms``: how old (relay time minus the peers' chaincode time) an attestation may be."""
DEFAULT_MAX_CLOCK_SKEW_MS: Final = 5_000
"""Default ``max_clock_skew_ms``: how far ahead of the relay's time a peer's chaincode clock may be."""
DEFAULT_MAX_CONFIGS: Final = 2
"""Default ``max_configs``: channel configs kept (the current one and the one before it)."""
HOSTED_MAX_CONSENSUS_STATES: Final = 512
"""Default ``max_consensus_states`` of a client made from init args."""
PARAM_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "max_consensus_states": (1, 4096),
    "max_attestation_age_ms": (1_000, 3_600_000),
    "max_clock_skew_ms": (0, 60_000),
    "max_configs": (1, 16),
}
"""Inclusive ranges of the client's tunable parameters (SPEC.md §8.7)."""
MAX_BLOCK_SIGNATURES: Final = 64
"""Most orderer signatures one block may carry."""
MAX_POLICY_ORGS: Final = 16
"""Most organisations in the endorsement policy."""
_I63: Final = 2**63 - 1


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CodecError(f"{name} out of range", expected=f"{low}..{high}", got=value)
    return value


class FabricLightClient(LightClient[Block]):
    """Follows one channel of a Fabric park (module docstring)."""

    client_type: ClassVar[str] = "fabric"

    def __init__(self, client_id: ClientId, chain_id: ChainId, trusting_period_ms: int, *, channel_id: str,
                 configs: Sequence[tuple[int, ChannelConfig]], anchor: ConsensusState,
                 chaincode: str = BRIDGE_CHAINCODE, policy_orgs: Sequence[str] = PEER_ORGS,
                 max_consensus_states: int = HOSTED_MAX_CONSENSUS_STATES,
                 max_attestation_age_ms: int = DEFAULT_MAX_ATTESTATION_AGE_MS,
                 max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS, max_configs: int = DEFAULT_MAX_CONFIGS) -> None:
        """A client trusting ``anchor`` (a final block) and the configs in force from each config block number on
        (ascending; the last is the current one). Prefer :meth:`from_trusted_block` / :meth:`from_init`. Raises
        :class:`CodecError` for an argument out of range."""
        check_id("chain", chain_id)
        _check_int("trusting_period_ms", trusting_period_ms, 1, _I63)
        for name, value in (("max_consensus_states", max_consensus_states),
                            ("max_attestation_age_ms", max_attestation_age_ms),
                            ("max_clock_skew_ms", max_clock_skew_ms), ("max_configs", max_configs)):
            _check_int(name, value, *PARAM_RANGES[name])
        if not isinstance(channel_id, str) or not 0 < len(channel_id) <= 249:
            raise CodecError("channel_id must be a Fabric channel name", got=channel_id)
        if not isinstance(chaincode, str) or not 0 < len(chaincode) <= 256:
            raise CodecError("chaincode must be a chaincode name", got=chaincode)
        orgs = tuple(policy_orgs)
        if (not 1 <= len(orgs) <= MAX_POLICY_ORGS or len(set(orgs)) != len(orgs)
                or not all(isinstance(o, str) and o for o in orgs)):
            raise CodecError("policy_orgs must be 1..16 distinct MSP ids", got=list(orgs))
        if not configs or [n for n, _ in configs] != sorted({n for n, _ in configs}):
            raise CodecError("configs must be ascending by block number, at least one",
                             got=[n for n, _ in configs])
        current = configs[-1][1]
        for _, cfg in configs:
            if cfg.channel_id != channel_id:
                raise CodecError("a config of another channel", expected=channel_id, got=cfg.channel_id)
        missing = [o for o in orgs if o not in current.application_msps]
        if missing:
            raise CodecError("policy organisations that are not application organisations of the channel",
                             expected=sorted(current.application_msps), got=missing)
        if configs[-1][0] > anchor.height:
            raise CodecError("the current config comes from a block above the trusted one",
                             expected=f"<= {anchor.height}", got=configs[-1][0])
        super().__init__(client_id, chain_id, trusting_period_ms, max_consensus_states)
        self.channel_id = channel_id
        """The Fabric channel followed."""
        self.chaincode = chaincode
        """The bridge chaincode whose attestations count."""
        self.policy_orgs = orgs
        """The endorsement policy: one valid peer of each of these MSPs (AND)."""
        self.max_attestation_age_ms = max_attestation_age_ms
        """Oldest attestation accepted, relative to the relay's time (hazard 3)."""
        self.max_clock_skew_ms = max_clock_skew_ms
        """How far ahead of the relay's time an attestation's chaincode clock may be."""
        self.max_configs = max_configs
        """Channel configs kept."""
        self._configs: list[tuple[int, ChannelConfig]] = list(configs)[-max_configs:]
        """``(config block number, config)`` ascending; the last is in force above its block."""
        self.last_config_index = configs[-1][0]
        """Number of the newest config block (what every later block's signed ``last_config`` must name)."""
        self._validated: tuple[bytes, int, ChannelConfig | None] | None = None
        """(block hash, relay time, new config) of the last block :meth:`validate_header` accepted."""
        self._record_final(anchor)

    # -- construction ----------------------------------------------------------------------------------------

    @classmethod
    def from_trusted_block(cls, client_id: ClientId, chain_id: ChainId, trusting_period_ms: int, block: Block, *,
                           channel_id: str, trusted_time_ms: int, **kwargs: Any) -> Self:
        """A client trusting config block ``block`` (the channel's genesis block or a later config block) of
        ``channel_id`` from relay time ``trusted_time_ms`` on. Its signatures are not checked: it is the root of
        trust, vouched for by whoever creates the client (the relay genesis, or governance)."""
        _check_int("trusted_time_ms", trusted_time_ms, 0, _I63)
        config = ChannelConfig.from_block(block, channel_id)
        anchor = ConsensusState(block.header.number, block.hash, trusted_time_ms, block.hash)
        return cls(client_id, chain_id, trusting_period_ms, channel_id=channel_id,
                   configs=[(block.header.number, config)], anchor=anchor, **kwargs)

    @classmethod
    def from_init(cls, client_id: ClientId, chain_id: ChainId, init: Mapping[str, Any]) -> Self:
        """A client from JSON init args (the relay's ``client.create`` or genesis)::

            {"config_block": "<hex of common.Block>",   # the channel's genesis block, or a later config block
             "channel_id": "park",
             "trusted_time_ms": 1790000000000,           # relay time from which the block is trusted
             "trusting_period_ms": 1209600000,
             "chaincode": "bridge",                      # optional (default chains.fabric.consts.BRIDGE_CHAINCODE)
             "policy_orgs": ["OperatorMSP", "SalesMSP"], # optional (default chains.fabric.consts.PEER_ORGS)
             "max_consensus_states": 512, "max_attestation_age_ms": 60000, "max_clock_skew_ms": 5000,
             "max_configs": 2}                           # optional, ranges in PARAM_RANGES

        Unknown or missing keys, and values out of range, are :class:`CodecError`; a block the client cannot follow
        is :class:`~chains.fabric.errors.ChannelConfigError`.
        """
        what = f"the init of fabric client {client_id}"
        required = ("config_block", "channel_id", "trusted_time_ms", "trusting_period_ms")
        optional = ("chaincode", "policy_orgs", *PARAM_RANGES)
        if not isinstance(init, Mapping) or not all(isinstance(k, str) for k in init):
            raise CodecError(f"{what} must be a JSON object", got=type(init).__name__)
        missing = [k for k in required if k not in init]
        if missing:
            raise CodecError(f"{what} lacks arguments", expected=list(required), got=sorted(init))
        extra = sorted(set(init) - set(required) - set(optional))
        if extra:
            raise CodecError(f"{what} has unknown arguments", expected=[*required, *optional], got=extra)
        raw = init["config_block"]
        if not isinstance(raw, str) or len(raw) > 2 * 4 * 1024 * 1024:
            raise CodecError(f"config_block of {what} must be hex", got=type(raw).__name__)
        try:
            block = Block.decode(bytes.fromhex(raw))
        except ValueError as exc:
            raise CodecError(f"config_block of {what} is not hex") from exc
        policy = init.get("policy_orgs", list(PEER_ORGS))
        if not isinstance(policy, list):
            raise CodecError(f"policy_orgs of {what} must be a list of MSP ids", got=policy)
        params = {k: init[k] for k in PARAM_RANGES if k in init}
        return cls.from_trusted_block(client_id, chain_id, init["trusting_period_ms"], block,
                                      channel_id=init["channel_id"], trusted_time_ms=init["trusted_time_ms"],
                                      chaincode=init.get("chaincode", BRIDGE_CHAINCODE), policy_orgs=policy, **params)

    # -- what the host and operators read ---------------------------------------------------------------------

    @property
    def latest_height(self) -> int:
        """Number of the newest block held (every held block is final)."""
        return self.final_height

    @property
    def config(self) -> ChannelConfig:
        """The channel config in force above :attr:`last_config_index`."""
        return self._configs[-1][1]

    def config_heights(self) -> list[int]:
        """Numbers of the config blocks whose configs are kept, ascending."""
        return [n for n, _ in self._configs]

    def holds(self, block: Block) -> bool:
        """Whether ``block`` is held (final at its height, same header hash)."""
        cs = self._final.get(block.header.number)
        return cs is not None and cs.header_hash == block.hash

    def attestation_policy(self) -> AttestationPolicy:
        """What an attestation must satisfy besides its statement."""
        return AttestationPolicy(self.channel_id, self.chaincode, self.policy_orgs, self.max_attestation_age_ms,
                                 self.max_clock_skew_ms)

    # -- validate / apply -----------------------------------------------------------------------------------------

    def validate_header(self, header: Block, now_ms: int) -> None:
        """Raise unless block ``header`` extends the newest held block (module docstring): ``packet.replay`` if held,
        ``header.unknown_parent`` if above the next height, ``header.invalid`` for a broken hash chain,
        ``header.fabric.signer`` / ``signature.invalid`` for its signatures, ``header.fabric.config`` for a config
        block the client cannot follow; ``client.misbehaviour`` for a validly signed other block at a held height."""
        self._validated = None
        block = header
        n = block.header.number
        if n <= self.final_height:
            held = self._final.get(n)
            if held is None:
                raise HeaderError(f"block {n} is below the heights client {self.client_id} retains",
                                  expected=f">= {min(self._final)}", got=n)
            if held.header_hash == block.hash:
                raise HeaderReplayError(f"block {n} is already held by client {self.client_id}", got=block.hash.hex())
            self._check_fork_block(block, now_ms)
            raise MisbehaviourError(
                f"client {self.client_id} of {self.chain_id}: orderers signed two blocks at height {n} on one parent",
                expected=held.header_hash.hex(), got=block.hash.hex())
        if n > self.final_height + 1:
            raise UnknownParentError(f"block {n} is above the next height of client {self.client_id}: feed the blocks "
                                     "below it first", expected=self.final_height + 1, got=n)
        tip = self._final[self.final_height]
        if block.header.previous_hash != tip.header_hash:
            raise HeaderError(f"block {n} does not extend block {tip.height} of client {self.client_id} (hash chain)",
                              expected=tip.header_hash.hex(), got=block.header.previous_hash.hex())
        value = self._check_signatures(block, self.config, now_ms)
        try:
            last_config = OrdererBlockMetadata.decode(value).last_config_index
        except CodecError as exc:
            raise ChannelConfigError(f"the signed metadata of block {n} is not an OrdererBlockMetadata: "
                                     f"{exc.message}") from exc
        new_config = None
        if last_config == n:
            new_config = ChannelConfig.from_block(block, self.channel_id)
            if new_config.sequence <= self.config.sequence:
                raise ChannelConfigError(f"config block {n} does not raise the config sequence",
                                         expected=f"> {self.config.sequence}", got=new_config.sequence)
        elif last_config != self.last_config_index:
            raise ChannelConfigError(f"block {n} names config block {last_config}, not the one client "
                                     f"{self.client_id} holds: a config block was skipped",
                                     expected=self.last_config_index, got=last_config)
        elif block.data is not None and data_hash(block.data) != block.header.data_hash:
            raise HeaderError(f"the data of block {n} does not match its data_hash",
                              expected=block.header.data_hash.hex(), got=data_hash(block.data).hex())
        self._validated = (block.hash, now_ms, new_config)

    def apply_header(self, header: Block) -> None:
        """Record a block :meth:`validate_header` just accepted: final at once, with the relay time it was accepted
        at; a config block's config is in force from the next block on."""
        validated, self._validated = self._validated, None
        if validated is None or validated[0] != header.hash:
            raise HeaderError(f"apply_header of block {header.height} without validate_header (host bug)")
        _, now_ms, new_config = validated
        n = header.header.number
        if new_config is not None:
            self._configs.append((n, new_config))
            del self._configs[:-self.max_configs]
            self.last_config_index = n
        self._record_final(ConsensusState(n, header.hash, now_ms, header.hash))

    def _config_for(self, n: int) -> ChannelConfig | None:
        """The config block ``n`` was signed under: the newest kept config of a block below ``n``."""
        for number, cfg in reversed(self._configs):
            if number < n:
                return cfg
        return None

    def _check_signatures(self, block: Block, config: ChannelConfig, now_ms: int) -> bytes:
        """The signed ``Metadata.value`` of ``block`` if enough consenters of ``config`` signed it, valid at
        ``now_ms``; its typed error otherwise."""
        n = block.header.number
        if len(block.metadata) <= SIGNATURES_INDEX:
            raise SignatureError(f"block {n} carries no signatures metadata")
        md = Metadata.decode(block.metadata[SIGNATURES_INDEX])
        if len(md.signatures) > MAX_BLOCK_SIGNATURES:
            raise CodecError(f"block {n} carries too many signatures", expected=f"<= {MAX_BLOCK_SIGNATURES}",
                             got=len(md.signatures))
        header_bytes = block.header.asn1()
        signed: set[tuple[str, str]] = set()
        from chains.fabric.msp import IdentityRefused, Msp, verify_signature  # loaded with the config (config.py)

        for sig in md.signatures:
            ident = SerializedIdentity.decode(SignatureHeader.decode(sig.signature_header).creator)
            msp = config.orderer_msps.get(ident.mspid)
            if msp is None:
                raise BlockSignerError(f"block {n} is signed by {ident.mspid}, not an orderer organisation of channel "
                                       f"{self.channel_id}", expected=sorted(config.orderer_msps), got=ident.mspid)
            try:
                valid = msp.validate(ident, "orderer")
                Msp.check_time(valid, now_ms)
            except IdentityRefused as exc:
                raise BlockSignerError(f"block {n}: signer refused: {exc.reason}", expected=exc.expected,
                                       got=exc.got) from exc
            consenter = (ident.mspid, valid.common_name)
            if consenter not in config.consenters:
                raise BlockSignerError(f"block {n} is signed by {valid.common_name!r} of {ident.mspid}, not a "
                                       f"consenter of channel {self.channel_id}", expected=sorted(config.consenters),
                                       got=consenter)
            if not verify_signature(valid.public_key, sig.signature, md.value + sig.signature_header + header_bytes):
                raise SignatureError(f"the signature of {valid.common_name!r} on block {n} does not verify")
            signed.add(consenter)
        if len(signed) < config.required_signatures:
            raise SignatureError(f"block {n} lacks consenter signatures", expected=config.required_signatures,
                                 got=len(signed))
        return md.value

    def _check_fork_block(self, block: Block, now_ms: int) -> None:
        """Raise unless ``block`` extends the block held below it and is validly signed under the config in force at
        its height (then it is the evidence of a fork wherever it differs from the held block)."""
        n = block.header.number
        parent = self._final.get(n - 1) if n > 0 else None
        if parent is None:
            raise HeaderError(f"block {n} at a height client {self.client_id} cannot judge: the block below it is not "
                              "held", expected=f"a height in {self.final_heights()[1:] or []}", got=n)
        if block.header.previous_hash != parent.header_hash:
            raise HeaderError(f"block {n} does not extend block {n - 1} of client {self.client_id}",
                              expected=parent.header_hash.hex(), got=block.header.previous_hash.hex())
        config = self._config_for(n)
        if config is None:
            raise HeaderError(f"block {n} predates the configs client {self.client_id} keeps",
                              expected=f"> {self._configs[0][0]}", got=n)
        self._check_signatures(block, config, now_ms)

    def validate_conflicting(self, header_a: Block, header_b: Block, now_ms: int) -> None:
        """Raise unless both blocks are at one height, differ, extend the block held below them and are validly signed
        under the config in force there: two such blocks prove the ordering service forked."""
        if header_a.height != header_b.height:
            raise HeaderError("evidence blocks are at different heights", expected=header_a.height,
                              got=header_b.height)
        if header_a.hash == header_b.hash:
            raise HeaderError("evidence blocks are one block", got=header_a.hash.hex())
        for block in (header_a, header_b):
            self._check_fork_block(block, now_ms)

    # -- proofs: attestations ---------------------------------------------------------------------------------------

    def _attested(self, height: int, key: bytes, value: bytes | None, proof: Any,
                  now_ms: int) -> tuple[Statement, ...]:
        self.check_active(now_ms)
        self.final_consensus_state(height)
        if not isinstance(proof, bytes | bytearray | memoryview):
            raise CodecError("a Fabric proof is an attestation bundle (bytes)", got=type(proof).__name__)
        return verify_attestation(bytes(proof), self.config, self.attestation_policy(), key, value, now_ms)

    def verify_membership(self, height: int, key: bytes, value: bytes, proof: Any, now_ms: int) -> None:
        """Raise unless ``proof`` attests ``key -> value`` (module docstring): ``client.frozen``/``client.expired``,
        ``header.not_final`` (``height``), then :func:`~chains.fabric.attestation.verify_attestation`'s errors."""
        self._attested(height, key, value, proof, now_ms)

    def verify_non_membership(self, height: int, key: bytes, proof: Any, now_ms: int) -> None:
        """Raise unless ``proof`` attests that ``key`` is absent (a fresh attestation: hazard 3)."""
        self._attested(height, key, None, proof, now_ms)

    def verify_timeout(self, height: int, key: bytes, timeout_timestamp_ms: int, proof: Any, now_ms: int, *,
                       certified: bool = True) -> None:
        """Raise unless ``proof`` attests that the receipt path ``key`` holds the timeout sentinel
        (:data:`~chains.fabric.consts.TIMEOUT_RECEIPT`) and every statement's chaincode time is at or past
        ``timeout_timestamp_ms`` (else ``packet.timeout``). For a packet the relay certified (``certified``), an
        attestation of absence proves nothing (``proof.fabric.statement``): the target may still execute it (hazard
        2). For one it never certified (``certified=False``: an unverified timeout, SPEC §6.6 and §8.7), a fresh
        attestation of absence at or past the timeout is accepted too: the bridge executes a packet only with the
        relay's certificate of its ``relay/verified`` record, which does not exist and which the relay never writes
        once the packet has an outcome, so no receipt can ever appear (and no sentinel either, which needs that
        certificate too)."""
        if certified:
            statements = self._attested(height, key, TIMEOUT_RECEIPT, proof, now_ms)
        else:
            statements = self._attested_absent_or_sentinel(height, key, proof, now_ms)
        for st in statements:
            if st.time_ms < timeout_timestamp_ms:
                raise TimeoutExpiredError(f"not yet timed out: a peer of {self.chain_id} attested the receipt path "
                                          "at a time before the packet's timeout",
                                          expected=f">= {timeout_timestamp_ms}", got=st.time_ms)

    def _attested_absent_or_sentinel(self, height: int, key: bytes, proof: Any,
                                     now_ms: int) -> tuple[Statement, ...]:
        """An uncertified packet's receipt path attested absent, or holding the sentinel (a statement of any other
        value is ``proof.fabric.statement``: the absence check's own error)."""
        try:
            return self._attested(height, key, None, proof, now_ms)
        except StatementError:
            return self._attested(height, key, TIMEOUT_RECEIPT, proof, now_ms)

    # -- persistence -------------------------------------------------------------------------------------------------

    def to_state(self) -> bytes:
        """Canonical JSON of everything the client's future behaviour depends on (module docstring)."""
        return canonical_json({
            "v": STATE_VERSION, "type": self.client_type, "base": base_state_to_json(self),
            "channel_id": self.channel_id, "chaincode": self.chaincode, "policy_orgs": list(self.policy_orgs),
            "max_attestation_age_ms": self.max_attestation_age_ms, "max_clock_skew_ms": self.max_clock_skew_ms,
            "max_configs": self.max_configs, "last_config_index": self.last_config_index,
            "configs": [[n, cfg.raw.hex()] for n, cfg in self._configs],
        })

    @classmethod
    def from_state(cls, client_id: ClientId, data: bytes) -> Self:
        """The inverse of :meth:`to_state`. ``data`` is trusted to come from :meth:`to_state` (the relay chain's own
        state): its structure is checked (:class:`CodecError`), not the history that produced it."""
        try:
            obj = open_state(data, client_type=cls.client_type, versions=(STATE_VERSION,), client_id=client_id,
                             name="a Fabric light-client state")
            base = obj["base"]
            channel_id = obj["channel_id"]
            configs = [(_check_int("config height", n, 0, _I63), ChannelConfig.parse(bytes.fromhex(raw), channel_id))
                       for n, raw in obj["configs"]]
            final = base["final"]
            if not final:
                raise CodecError("a Fabric light-client state holds at least one final block")
            h, hh, ts, root = final[-1]
            anchor = ConsensusState(int(h), bytes.fromhex(hh), int(ts), bytes.fromhex(root))
            client = cls(client_id, ChainId(base["chain_id"]), base["trusting_period_ms"], channel_id=channel_id,
                         configs=configs, anchor=anchor, chaincode=obj["chaincode"], policy_orgs=obj["policy_orgs"],
                         max_consensus_states=base["max_consensus_states"],
                         max_attestation_age_ms=obj["max_attestation_age_ms"],
                         max_clock_skew_ms=obj["max_clock_skew_ms"], max_configs=obj["max_configs"])
            restore_base_state(client, base)
            client.last_config_index = _check_int("last_config_index", obj["last_config_index"], 0, _I63)
            if client.last_config_index != configs[-1][0]:
                raise CodecError("last_config_index is not the newest config's block",
                                 expected=configs[-1][0], got=client.last_config_index)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CodecError(f"malformed Fabric light-client state of {client_id}: {exc!r}") from exc
        return client
