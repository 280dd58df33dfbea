"""Every state key the relay chain's application writes (SPEC.md §5, plus the relay's own records).

The relay chain commits its whole application state in one sparse Merkle tree (SPEC.md §4), so a
relay header's ``state_root`` commits to all of it: the two protocol records that relay certificates
prove (``relay/verified/…``, ``relay/outcome/…``), and the records that decide what the relay accepts
next (light clients, lanes, rate-limit buckets, the supply accountant, governance). Keys are UTF-8;
ids contain no ``/`` (SPEC.md §2.1), so a key has one parse; a denom or a right id may contain ``/`` and
is always the last segment.

==========================================================  ==============================================
key                                                          value
==========================================================  ==============================================
``relay/verified/{src}/{dst}/{lane}/{seq}``                  packet commitment (SPEC §5), phase 2
``relay/outcome/{src}/{dst}/{lane}/{seq}``                   outcome record (SPEC §2.5), phase 4
``relay/fees/verify/{src}/{dst}/{lane}/{seq}``               payee of the relayer that verified the packet,
                                                             until its outcome (SPEC §6.10)
``relay/suspended/{src}/{dst}/{lane}/{seq}``                 packet commitment of a packet VERIFIED without an
                                                             outcome when its source's client froze: its
                                                             ``relay/verified`` record moved here (SPEC §8.8)
``relay/frozen_at/{chain_id}``                               ``{"client_id", "time_ms"}``: relay block time of
                                                             the chain's client's freeze (SPEC §8.8)
``relay/config``                                             ``{"chain_id", "recovery_delay_ms"?}`` (genesis)
``relay/validators``                                         relay validator set, wire JSON
``relay/governance/nonce``                                   next governance nonce (decimal; absent = 0)
``relay/clients/{chain_id}``                                 ``{"client_id", "client_type"}``: the client
                                                             that follows the chain now
``relay/client_state/{client_id}``                           the client's ``to_state()`` bytes
``relay/client_index``                                       next client index ``n`` of ``<type>-<n>``
``relay/lanes/{src}/{dst}/{lane}``                           ``{"paused", "reason", "limits"}``
``relay/chain_lanes/{chain_id}``                             ``[[src, dst, lane], …]``: lanes touching
                                                             the chain (to pause them on a freeze)
``relay/lane_config/{src}/{dst}/{lane}``                     lane-config record (SPEC §6.8): ABI
                                                             ``(string[] assets, uint64[] capacities)``
``relay/buckets/{src}/{dst}/{lane}/{asset}``                 ``{"milli", "last_ms"}`` token bucket
``relay/supply/{home}/{lane}/{remote}/{denom}``              ``{"outstanding", "outbound", "returning"}``
``relay/rights/{home}/{lane}/{remote}/{right_id}``           ``{"state", <the right's fields>}``: rights
                                                             accountant (one record per hop of a right)
``relay/bonds``                                              bond parameters and the genesis bond ``supply``
                                                             (SPEC §6.9, :mod:`.bonds`)
``relay/bonds/slashed``                                      bond units taken by slashing (decimal)
``relay/bonds/funds/{name}``                                 bond units held for a name not registered yet
``accounts/{name}``                                          relayer account (``chains.common.tx``) with its
                                                             bond fields (``status``, ``bond``, ``balance``,
                                                             ``failures``...; :mod:`.bonds`)
==========================================================  ==============================================
"""

from __future__ import annotations

from protocol.paths import outcome_path, verified_path

__all__ = [
    "BONDS_KEY",
    "CLIENT_INDEX_KEY",
    "CONFIG_KEY",
    "GOVERNANCE_NONCE_KEY",
    "PRUNE_VERIFIED_KEY",
    "SLASHED_KEY",
    "VALIDATORS_KEY",
    "bond_funds_key",
    "bucket_key",
    "chain_lanes_key",
    "client_pointer_key",
    "client_state_key",
    "frozen_at_key",
    "lane_key",
    "outcome_path",
    "rights_key",
    "supply_key",
    "suspended_key",
    "verified_path",
]

CONFIG_KEY = b"relay/config"
VALIDATORS_KEY = b"relay/validators"
GOVERNANCE_NONCE_KEY = b"relay/governance/nonce"
CLIENT_INDEX_KEY = b"relay/client_index"
BONDS_KEY = b"relay/bonds"
PRUNE_VERIFIED_KEY = b"relay/features/prune_verified"
"""Present (genesis ``prune_verified``, the default): an outcome record replaces the packet's ``relay/verified``
record (SPEC §6.6). Absent on a chain whose genesis predates it, so replaying its blocks gives the same states."""
SLASHED_KEY = b"relay/bonds/slashed"


def bond_funds_key(name: str) -> bytes:
    """Bond units held for ``name`` before it registers (``bond.transfer`` to an unregistered name)."""
    return f"relay/bonds/funds/{name}".encode()


def client_pointer_key(chain_id: str) -> bytes:
    """Which client follows ``chain_id`` now (a replaced client keeps its state under its own id)."""
    return f"relay/clients/{chain_id}".encode()


def client_state_key(client_id: str) -> bytes:
    """The persisted state of one light client."""
    return f"relay/client_state/{client_id}".encode()


def frozen_at_key(chain_id: str) -> bytes:
    """When the client following ``chain_id`` froze (relay block time; SPEC §8.8): ``client.recover`` waits for
    ``recovery_delay_ms`` after it."""
    return f"relay/frozen_at/{chain_id}".encode()


def suspended_key(verified_key: bytes) -> bytes:
    """Where a freeze moves a ``relay/verified/…`` record (SPEC §8.8): out of the path certificates prove."""
    assert verified_key.startswith(b"relay/verified/")
    return b"relay/suspended/" + verified_key[len(b"relay/verified/"):]


def lane_key(src: str, dst: str, lane: str) -> bytes:
    """A directed lane: packets from ``src`` to ``dst`` on ``lane``."""
    return f"relay/lanes/{src}/{dst}/{lane}".encode()


def chain_lanes_key(chain_id: str) -> bytes:
    """Index of the lanes with ``chain_id`` at either end."""
    return f"relay/chain_lanes/{chain_id}".encode()


def bucket_key(src: str, dst: str, lane: str, asset: str) -> bytes:
    """Token bucket of one asset on one directed lane (SPEC §6.7)."""
    return f"relay/buckets/{src}/{dst}/{lane}/{asset}".encode()


def supply_key(home: str, lane: str, remote: str, denom: str) -> bytes:
    """Supply accountant record of one hop: ``denom`` escrowed by ``home`` on ``lane`` for ``remote``."""
    return f"relay/supply/{home}/{lane}/{remote}/{denom}".encode()


def rights_key(home: str, lane: str, remote: str, right_id: str) -> bytes:
    """Rights accountant record of one hop: ``right_id`` escrowed by ``home`` on ``lane`` for ``remote``."""
    return f"relay/rights/{home}/{lane}/{remote}/{right_id}".encode()
