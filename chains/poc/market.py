"""The PoC park's ancillary-service market and capacity competition (docs/architecture.md §5;
docs/research.md#seed-000). Pure op handlers.

docs/research.md#seed-000 makes the market's users the chain's nodes: a storage unit farms the chain with disk
space, and
the capacity it may offer the grid is bounded by the space it has committed. This module keeps both
sides in one state:

* **Capacity competition.** Each farmer's record holds its committed plots. ``poc.fill`` commits a plot
  (with a proof of space for a recent chain challenge, so the plot exists now), ``poc.erase`` releases
  one, and farming a block with a plot commits it too (:func:`commit_plot`, called from
  :func:`chains.poc.app.apply_farmed_block`). Committed space backs offered power:
  ``max_kw = committed_bytes * kw_per_k21_plot // S(21)``.
* **Demand.** The grid operator posts, per round and service, the capacity it needs
  (``market.demand {service, amount_kw, price_cap, duration_ms, min_response_ppm?}``) and escrows
  ``amount_kw * price_cap``. The service's parameter demands are part of it: ``duration_ms`` (how long the
  capacity is held, which bounds what a storage unit's charge can answer) and ``min_response_ppm`` (the least
  response rate a unit needs to be called for it, e.g. a fast service that must not fail; default 0).
* **Offers.** Units offer capacity (``market.offer {service, amount_kw, price}``), replacing their
  previous offer for that service in the round; ``amount_kw = 0`` withdraws. The sum of a unit's offers
  in a round may not exceed its ``max_kw``.
* **Clearing (supply-demand split).** At the first block of round r+1, each service's demand of round r
  is cleared against its offers at or under the price cap from units whose response rate reaches the
  demand's ``min_response_ppm``, ranked by price, then response rate, then
  committed space, then name. The demand is *split*: in a first pass no unit gets more than
  ``max_unit_share_pct`` % of it, so more units are called and one unit's failure to respond costs
  less (the seed's answer to response rate); a second pass fills what is left from the same ranking
  without the cap. Every called unit is paid the uniform clearing price (the highest awarded offer's).
  The unused escrow is refunded at once.
* **Settlement and response rate.** The operator reports each award's delivered kW
  (``market.report {round, service, unit, delivered_kw}``): the unit is paid ``delivered * price`` and
  the rest refunded. An award still unreported ``report_rounds`` rounds after clearing settles as fully
  delivered. Each unit's record keeps awarded and delivered kW: its response rate
  ``delivered * 10^6 // awarded`` (ppm; ``default_response_ppm`` before any award) ranks its next offers.
* **Energy storage answers capacity demand by filling and erasing plots.** The grid operator commissions a
  unit as storage (``market.storage_register {unit, energy_wh, soc_wh}``) and reports its metered state of
  charge (``market.storage_soc {unit, soc_wh}``); each settled award of a storage unit discharges it by the
  delivered energy (``delivered_kw * duration_ms // 3600`` Wh). For a storage unit the chain binds committed
  space to charge: its plots may back no more than ``charge_kw = soc_wh * 3600 // storage_backing_ms`` kW
  (the power its charge sustains for ``storage_backing_ms``). It *fills* plots as it charges, to offer more:
  a ``poc.fill`` (or a farmed block's plot) that would take its plots over ``charge_kw`` is refused (the
  block's plot is left uncommitted). It *erases* plots as it discharges, to release space its charge no
  longer backs: while its plots back more than ``charge_kw`` it is over-committed and may not offer until
  it has erased down to its charge (then ``max_kw`` is ``min(plots, charge)``); clearing never awards a
  storage unit more than its ``max_kw`` at clearing time, nor more than its charge sustains for the demand's
  ``duration_ms``. So a storage unit's offered capacity follows its
  state of charge, and the space it commits to the market follows the energy it holds (consensus still takes any
  plot bound to its key: farming is not what the market binds).
* **Reputation from other parks.** A unit new here may bring its record from another park:
  ``market.import_reputation {src_chain, subject, model}`` names an attestation this park imported
  (:mod:`chains.common.reputation`; every model scores in basis points). The caller must hold it (the
  subject sent its own attestation to the caller's account here) and its score must reach
  ``import_min_score``; until the unit's first settled award here, that score (as ppm) stands for its
  response rate in the ranking instead of ``default_response_ppm``. Its own record then takes over, and
  only its own record is what this park attests (:mod:`chains.poc.reputation`).

Balances only move between accounts and the market's escrow account ``@market`` (a name no account can
register, so nobody can sign for it): the total of every denomination is unchanged by every op.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from chains.common.reputation import SCORE_MAX, held_reputation, parse_import_ref
from chains.common.state import ChainState
from chains.common.tx import BlockContext, BlockHook, OpHandler, Tx, account_path, arg
from chains.poc.consensus import ProofVerifier, chiapos_verifier, expected_plot_size, plot_id
from protocol.errors import AuthorizationError, CodecError, InvalidProofError, ProtocolError

__all__ = [
    "CHAIN_KEY",
    "ESCROW_ACCOUNT",
    "FILL_TAG",
    "PocAppParams",
    "account_pubkey",
    "awards_key",
    "clear_service",
    "commit_plot",
    "farmer_key",
    "farmer_record",
    "fill_challenge",
    "market_clear_hook",
    "market_ops",
    "max_kw",
    "new_farmer_record",
    "own_response_ppm",
    "plot_owner_key",
    "plots_kw",
    "response_ppm",
    "round_key",
    "storage_kw",
    "supply_key",
]

ESCROW_ACCOUNT = "@market"
"""Holds demand escrow between posting and settlement; not a valid account name, so no key signs for it."""
FILL_TAG = b"parkrelay/poc/fill/v1"
_S21 = expected_plot_size(21)
_PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class PocAppParams:
    """Application parameters of a PoC park (genesis config ``app`` section)."""

    grid_operator: str
    """Account of the grid operator: the only one that posts demand and reports delivery."""
    settle_denom: str = "pcc"
    """Denomination demands are escrowed and awards paid in."""
    reward_denom: str = "pcc"
    """Denomination of block rewards (minted)."""
    block_reward: int = 10
    """Minted to the farmer of each block."""
    round_blocks: int = 10
    """Blocks per market round; round r is heights [r*R, (r+1)*R) and clears at height (r+1)*R."""
    services: tuple[str, ...] = ("frequency_regulation", "reserve", "peak_regulation")
    """Ancillary services traded."""
    kw_per_k21_plot: int = 100
    """Power (kW) one k=21 plot's worth of committed space may offer."""
    max_unit_share_pct: int = 50
    """First clearing pass: no unit gets more than this share (%) of one demand; 100 turns the split off."""
    default_response_ppm: int = 900_000
    """Response rate assumed for a unit with no settled award yet, ppm."""
    report_rounds: int = 2
    """Rounds after clearing within which the operator reports delivery; later, awards settle as delivered."""
    fill_window: int = 16
    """A fill proof may answer the challenge of any of the last this-many blocks."""
    max_fill_index: int = 64
    """Fill sub-challenges a farmer may try (a plot answers a given challenge only ~63 % of the time)."""
    min_k: int = 21
    """Smallest plot size that may be committed."""
    max_k: int = 32
    """Largest plot size that may be committed."""
    import_min_score: int = 5000
    """Least imported score (basis points, 0..10000) a unit may bring from another park
    (``market.import_reputation``)."""
    storage_backing_ms: int = 3_600_000
    """A storage unit's plots may back no more kW than its state of charge sustains for this long."""

    def __post_init__(self) -> None:
        for name in ("round_blocks", "kw_per_k21_plot", "report_rounds", "fill_window", "max_fill_index",
                     "storage_backing_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CodecError(f"PoC app param {name} must be a positive integer", got=v)
        if not 1 <= self.max_unit_share_pct <= 100:
            raise CodecError("max_unit_share_pct must be in 1..100", got=self.max_unit_share_pct)
        if isinstance(self.import_min_score, bool) or not isinstance(self.import_min_score, int) or not (
                0 <= self.import_min_score <= SCORE_MAX):
            raise CodecError(f"import_min_score must be in 0..{SCORE_MAX}", got=self.import_min_score)
        if not 0 <= self.default_response_ppm <= _PPM:
            raise CodecError("default_response_ppm must be in 0..1e6", got=self.default_response_ppm)
        if self.block_reward < 0:
            raise CodecError("block_reward must be >= 0", got=self.block_reward)
        if not self.services or len(set(self.services)) != len(self.services):
            raise CodecError("services must be a non-empty list of distinct names", got=self.services)

    def to_json(self) -> dict[str, Any]:
        return {"grid_operator": self.grid_operator, "settle_denom": self.settle_denom,
                "reward_denom": self.reward_denom, "block_reward": self.block_reward,
                "round_blocks": self.round_blocks, "services": list(self.services),
                "kw_per_k21_plot": self.kw_per_k21_plot, "max_unit_share_pct": self.max_unit_share_pct,
                "default_response_ppm": self.default_response_ppm, "report_rounds": self.report_rounds,
                "fill_window": self.fill_window, "max_fill_index": self.max_fill_index,
                "min_k": self.min_k, "max_k": self.max_k, "import_min_score": self.import_min_score,
                "storage_backing_ms": self.storage_backing_ms}

    @classmethod
    def from_json(cls, obj: Any) -> PocAppParams:
        if isinstance(obj, PocAppParams):
            return obj
        if not isinstance(obj, dict):
            raise CodecError("PoC app params are a JSON object", got=type(obj).__name__)
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise CodecError("unknown PoC app params", expected=sorted(cls.__dataclass_fields__), got=sorted(unknown))
        fields = dict(obj)
        if "services" in fields:
            fields["services"] = tuple(fields["services"])
        try:
            return cls(**fields)
        except TypeError as exc:
            raise CodecError(f"malformed PoC app params: {exc}") from exc

    def round_of(self, height: int) -> int:
        return height // self.round_blocks


# -- state keys -------------------------------------------------------------------------------


def farmer_key(name: str) -> bytes:
    """``poc/farmers/<name>``: the farmer (unit) record."""
    return f"poc/farmers/{name}".encode()


def plot_owner_key(pid: bytes) -> bytes:
    """``poc/plots/<plot_id hex>``: which farmer committed the plot (one owner per plot)."""
    return f"poc/plots/{pid.hex()}".encode()


def round_key(rnd: int) -> bytes:
    """``poc/market/round/<r>``: demands and offers of round r (deleted once cleared)."""
    return f"poc/market/round/{rnd}".encode()


def awards_key(rnd: int) -> bytes:
    """``poc/market/awards/<r>``: awards of round r (deleted once settled)."""
    return f"poc/market/awards/{rnd}".encode()


CHAIN_KEY = b"poc/chain"
"""``{"height", "challenges": [[height, hex], ...]}``: the latest block and the challenges fills may answer."""


def supply_key(denom: str) -> bytes:
    """``poc/supply/<denom>``: total issued (genesis balances plus block rewards)."""
    return f"poc/supply/{denom}".encode()


# -- farmer records ---------------------------------------------------------------------------


def new_farmer_record() -> dict[str, Any]:
    return {"plots": {}, "committed_bytes": 0, "blocks_farmed": 0, "last_farmed_height": -1,
            "awarded_kw": 0, "delivered_kw": 0, "awards": 0}


def farmer_record(state: ChainState, name: str) -> dict[str, Any] | None:
    """The farmer record of ``name``, or None."""
    rec = state.get_json(farmer_key(name))
    return rec if isinstance(rec, dict) else None


def account_pubkey(state: ChainState, name: str) -> bytes:
    acct = state.get_json(account_path(name))
    if acct is None:
        raise AuthorizationError("unknown account", got=name)
    return bytes.fromhex(acct["pubkey"])


def plots_kw(params: PocAppParams, record: dict[str, Any], extra_bytes: int = 0) -> int:
    """Power the unit's committed space backs (plus ``extra_bytes``): k21-plots times ``kw_per_k21_plot``."""
    return (int(record["committed_bytes"]) + extra_bytes) * params.kw_per_k21_plot // _S21


def storage_kw(params: PocAppParams, record: dict[str, Any]) -> int | None:
    """Power a storage unit's state of charge sustains for ``storage_backing_ms`` (None: not storage)."""
    storage = record.get("storage")
    if not storage:
        return None
    return int(storage["soc_wh"]) * 3600 // params.storage_backing_ms


def max_kw(params: PocAppParams, record: dict[str, Any]) -> int:
    """Power a unit may offer per round: its committed space in k21-plots times ``kw_per_k21_plot``; for a
    storage unit no more than its state of charge backs (:func:`storage_kw`)."""
    plots = plots_kw(params, record)
    charge = storage_kw(params, record)
    return plots if charge is None else min(plots, charge)


def over_committed(params: PocAppParams, record: dict[str, Any]) -> bool:
    """A storage unit whose plots back more than its charge: it must erase plots before it offers."""
    charge = storage_kw(params, record)
    return charge is not None and plots_kw(params, record) > charge


def storage_room(params: PocAppParams, record: dict[str, Any], k: int) -> bool:
    """Whether a new size-``k`` plot keeps the unit's plots within its charge (always, for a non-storage unit)."""
    charge = storage_kw(params, record)
    return charge is None or plots_kw(params, record, expected_plot_size(k)) <= charge


def response_ppm(params: PocAppParams, record: dict[str, Any]) -> int:
    """A unit's response rate as the market ranks it, ppm of awarded kW delivered; before its first settled award,
    its imported score if it brought one, else ``default_response_ppm``."""
    awarded = int(record["awarded_kw"])
    if awarded:
        return int(record["delivered_kw"]) * _PPM // awarded
    imported = record.get("imported")
    return int(imported["score"]) * (_PPM // SCORE_MAX) if imported else params.default_response_ppm


def own_response_ppm(params: PocAppParams, record: dict[str, Any]) -> int:
    """A unit's response rate from its awards here only (``default_response_ppm`` before any): what the park
    attests, never a score it imported."""
    awarded = int(record["awarded_kw"])
    return int(record["delivered_kw"]) * _PPM // awarded if awarded else params.default_response_ppm


def commit_plot(state: ChainState, name: str, pid: bytes, k: int, nonce: bytes, height: int,
                params: PocAppParams | None = None) -> bool:
    """Add a proven plot to ``name``'s committed space; refresh its proven height if already there.

    Returns False (and changes nothing) if another farmer committed the plot: one plot backs one unit; or, with
    ``params``, if ``name`` is a storage unit whose charge does not back a new plot (:func:`storage_room`).
    """
    owner = state.get(plot_owner_key(pid))
    if owner is not None and owner.decode() != name:
        return False
    rec = farmer_record(state, name) or new_farmer_record()
    plots = rec["plots"]
    if pid.hex() not in plots and params is not None and not storage_room(params, rec, k):
        return False
    if pid.hex() not in plots:
        rec["committed_bytes"] += expected_plot_size(k)
        state.set(plot_owner_key(pid), name.encode())
    plots[pid.hex()] = {"k": k, "nonce": nonce.hex(), "proven_height": height}
    state.set_json(farmer_key(name), rec)
    return True


def fill_challenge(chain_challenge: bytes, pid: bytes, index: int) -> bytes:
    """Challenge a ``poc.fill`` proof answers: ``sha256(FILL_TAG || chain_challenge || plot_id || u8 index)``."""
    return hashlib.sha256(FILL_TAG + chain_challenge + pid + bytes((index,))).digest()


def recent_challenges(state: ChainState) -> dict[int, bytes]:
    rec = state.get_json(CHAIN_KEY) or {"challenges": []}
    return {int(h): bytes.fromhex(c) for h, c in rec["challenges"]}


# -- helpers ----------------------------------------------------------------------------------


def _nonneg(tx: Tx, name: str) -> int:
    v: int = arg(tx, name, int)
    if v < 0:
        raise CodecError(f"argument {name!r} of {tx.op} must be >= 0", got=v)
    return v


def _positive(tx: Tx, name: str) -> int:
    v: int = arg(tx, name, int)
    if v <= 0:
        raise CodecError(f"argument {name!r} of {tx.op} must be > 0", got=v)
    return v


def _hex(tx: Tx, name: str, size: int | None = None) -> bytes:
    raw: str = arg(tx, name, str)
    try:
        out = bytes.fromhex(raw)
    except ValueError as exc:
        raise CodecError(f"argument {name!r} of {tx.op} must be hex") from exc
    if size is not None and len(out) != size:
        raise CodecError(f"argument {name!r} of {tx.op} must be {size} bytes", got=len(out))
    return out


def _service(params: PocAppParams, tx: Tx) -> str:
    service: str = arg(tx, "service", str)
    if service not in params.services:
        raise ProtocolError("unknown ancillary service", expected=list(params.services), got=service)
    return service


def _round(state: ChainState, rnd: int) -> dict[str, Any]:
    blob = state.get_json(round_key(rnd))
    return blob if isinstance(blob, dict) else {"demands": {}, "offers": {}}


def _offered_kw(blob: dict[str, Any], unit: str, skip_service: str | None = None) -> int:
    return sum(int(by_unit[unit]["amount_kw"]) for service, by_unit in blob["offers"].items()
               if service != skip_service and unit in by_unit)


def _move(state: ChainState, src: str, dst: str, denom: str, amount: int) -> None:
    if amount:
        state.sub_balance(src, denom, amount)
        state.add_balance(dst, denom, amount)


# -- ops --------------------------------------------------------------------------------------


def market_ops(params: PocAppParams, verifier: ProofVerifier | None = None) -> dict[str, OpHandler]:
    """The market and capacity ops, bound to ``params`` (op name -> handler)."""
    lazy: dict[str, ProofVerifier] = {}

    def verify(pid: bytes, k: int, challenge: bytes, proof: bytes) -> bytes | None:
        if verifier is not None:
            return verifier(pid, k, challenge, proof)
        if "v" not in lazy:
            lazy["v"] = chiapos_verifier()
        return lazy["v"](pid, k, challenge, proof)

    def op_fill(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """``poc.fill {plot_nonce, k, challenge_height, index, proof}``: commit a plot proven for a recent challenge."""
        nonce = _hex(tx, "plot_nonce", 32)
        k = _nonneg(tx, "k")
        if not params.min_k <= k <= params.max_k:
            raise ProtocolError("plot size out of range", expected=f"{params.min_k}..{params.max_k}", got=k)
        challenge_height = _nonneg(tx, "challenge_height")
        index = _nonneg(tx, "index")
        if index >= params.max_fill_index:
            raise ProtocolError("fill index out of range", expected=f"< {params.max_fill_index}", got=index)
        proof = _hex(tx, "proof", 8 * k)
        chain_challenge = recent_challenges(state).get(challenge_height)
        if chain_challenge is None:
            raise ProtocolError("fill proof answers no recent challenge", expected=sorted(recent_challenges(state)),
                                got=challenge_height)
        pid = plot_id(account_pubkey(state, tx.sender), nonce)
        owner = state.get(plot_owner_key(pid))
        if owner is not None:
            raise ProtocolError("plot already committed", got=owner.decode())
        before = farmer_record(state, tx.sender) or new_farmer_record()
        if not storage_room(params, before, k):
            raise ProtocolError("storage unit: its state of charge does not back another plot",
                                expected=f"plots <= {storage_kw(params, before)} kW",
                                got=plots_kw(params, before, expected_plot_size(k)))
        if not verify(pid, k, fill_challenge(chain_challenge, pid, index), proof):
            raise InvalidProofError(f"fill proof of {tx.sender} does not verify for plot {pid.hex()[:16]}…")
        commit_plot(state, tx.sender, pid, k, nonce, ctx.height)
        rec = farmer_record(state, tx.sender) or new_farmer_record()
        return [{"type": "poc.fill", "farmer": tx.sender, "plot_id": pid.hex(), "k": k,
                 "committed_bytes": rec["committed_bytes"], "max_kw": max_kw(params, rec)}]

    def op_erase(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """``poc.erase {plot_id}``: release a committed plot; refused if open offers would exceed the rest."""
        pid = _hex(tx, "plot_id", 32)
        rec = farmer_record(state, tx.sender)
        if rec is None or pid.hex() not in rec["plots"]:
            raise ProtocolError("no such committed plot", got=pid.hex())
        k = int(rec["plots"].pop(pid.hex())["k"])
        rec["committed_bytes"] -= expected_plot_size(k)
        offered = _offered_kw(_round(state, params.round_of(ctx.height)), tx.sender)
        if offered > plots_kw(params, rec):  # space, not charge: a discharged storage unit may always erase down
            raise ProtocolError("erasing the plot would leave open offers without committed capacity",
                                expected=f"offers <= {plots_kw(params, rec)} kW", got=offered)
        state.set_json(farmer_key(tx.sender), rec)
        state.delete(plot_owner_key(pid))
        return [{"type": "poc.erase", "farmer": tx.sender, "plot_id": pid.hex(),
                 "committed_bytes": rec["committed_bytes"], "max_kw": max_kw(params, rec),
                 "over_committed": over_committed(params, rec)}]

    def op_demand(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """``market.demand {service, amount_kw, price_cap, duration_ms, min_response_ppm?}``: the operator's
        capacity demand."""
        if tx.sender != params.grid_operator:
            raise AuthorizationError("only the grid operator posts demand", expected=params.grid_operator,
                                     got=tx.sender)
        service = _service(params, tx)
        amount, cap, duration = _positive(tx, "amount_kw"), _positive(tx, "price_cap"), _positive(tx, "duration_ms")
        min_response = tx.args.get("min_response_ppm", 0)
        if isinstance(min_response, bool) or not isinstance(min_response, int) or not 0 <= min_response <= _PPM:
            raise CodecError("min_response_ppm must be in 0..1e6", got=min_response)
        rnd = params.round_of(ctx.height)
        blob = _round(state, rnd)
        if service in blob["demands"]:
            raise ProtocolError(f"a demand for {service} exists in round {rnd}", got=service)
        escrow = amount * cap
        _move(state, tx.sender, ESCROW_ACCOUNT, params.settle_denom, escrow)
        demand = {"amount_kw": amount, "price_cap": cap, "duration_ms": duration, "escrow": escrow}
        if min_response:
            demand["min_response_ppm"] = min_response
        blob["demands"][service] = demand
        state.set_json(round_key(rnd), blob)
        return [{"type": "market.demand", "round": rnd, "service": service, "amount_kw": amount, "price_cap": cap,
                 "escrow": escrow, "min_response_ppm": min_response}]

    def op_offer(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """``market.offer {service, amount_kw, price}``: offer (or with 0 kW withdraw) capacity this round."""
        service = _service(params, tx)
        amount, price = _nonneg(tx, "amount_kw"), _nonneg(tx, "price")
        rec = farmer_record(state, tx.sender)
        if rec is None or not rec["committed_bytes"]:
            raise ProtocolError("no committed plot capacity: fill a plot before offering", got=tx.sender)
        if amount and over_committed(params, rec):
            raise ProtocolError(f"storage unit {tx.sender} is over-committed: erase plots down to its state of charge "
                                "before offering", expected=f"plots <= {storage_kw(params, rec)} kW",
                                got=plots_kw(params, rec))
        rnd = params.round_of(ctx.height)
        blob = _round(state, rnd)
        total = _offered_kw(blob, tx.sender, skip_service=service) + amount
        limit = max_kw(params, rec)
        if total > limit:
            raise ProtocolError(f"offers of {tx.sender} exceed its committed capacity", expected=f"<= {limit} kW",
                                got=total)
        by_unit = blob["offers"].setdefault(service, {})
        if amount:
            by_unit[tx.sender] = {"amount_kw": amount, "price": price}
        else:
            by_unit.pop(tx.sender, None)
            if not by_unit:
                del blob["offers"][service]
        state.set_json(round_key(rnd), blob)
        return [{"type": "market.offer", "round": rnd, "service": service, "unit": tx.sender, "amount_kw": amount,
                 "price": price}]

    def op_report(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """``market.report {round, service, unit, delivered_kw}``: settle one award by its delivered power."""
        if tx.sender != params.grid_operator:
            raise AuthorizationError("only the grid operator reports delivery", expected=params.grid_operator,
                                     got=tx.sender)
        rnd, service, unit = _nonneg(tx, "round"), arg(tx, "service", str), arg(tx, "unit", str)
        delivered = _nonneg(tx, "delivered_kw")
        awards = state.get_json(awards_key(rnd))
        award = None if awards is None else awards.get(service, {}).get("units", {}).get(unit)
        if award is None:
            raise ProtocolError("no such award", got=f"round {rnd} {service} {unit}")
        if award["delivered"] is not None:
            raise ProtocolError("award already settled", got=f"round {rnd} {service} {unit}")
        if delivered > award["kw"]:
            raise ProtocolError("delivered more than awarded", expected=f"<= {award['kw']}", got=delivered)
        events = _settle(state, params, rnd, awards, service, unit, delivered)
        _store_awards(state, rnd, awards)
        return events

    def op_import_reputation(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """``market.import_reputation {src_chain, subject, model}``: rank the caller, until its first settled
        award here, by a score it earned on another park (module docstring)."""
        src, subject, model = parse_import_ref(dict(tx.args), "market.import_reputation's arguments")
        held = held_reputation(state, tx.sender, src, subject, model, params.import_min_score)
        rec = farmer_record(state, tx.sender) or new_farmer_record()
        rec["imported"] = {"src_chain": src, "subject": subject, "model": model, "score": int(held["score"]),
                           "source_height": int(held["source_height"])}
        state.set_json(farmer_key(tx.sender), rec)
        return [{"type": "market.reputation_imported", "unit": tx.sender, **rec["imported"],
                 "response_ppm": response_ppm(params, rec)}]

    def op_storage_register(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """``market.storage_register {unit, energy_wh, soc_wh}`` (grid operator): commission a unit as storage."""
        if tx.sender != params.grid_operator:
            raise AuthorizationError("only the grid operator commissions storage", expected=params.grid_operator,
                                     got=tx.sender)
        unit = arg(tx, "unit", str)
        energy, soc = _positive(tx, "energy_wh"), _nonneg(tx, "soc_wh")
        account_pubkey(state, unit)
        rec = farmer_record(state, unit) or new_farmer_record()
        if rec.get("storage"):
            raise ProtocolError("unit already commissioned as storage", got=unit)
        if soc > energy:
            raise ProtocolError("state of charge above the storage's energy", expected=f"<= {energy} Wh", got=soc)
        rec["storage"] = {"energy_wh": energy, "soc_wh": soc}
        state.set_json(farmer_key(unit), rec)
        return [_storage_event("market.storage_registered", params, unit, rec)]

    def op_storage_soc(state: ChainState, tx: Tx, ctx: BlockContext) -> list[dict[str, Any]]:
        """``market.storage_soc {unit, soc_wh}`` (grid operator): a storage unit's metered state of charge."""
        if tx.sender != params.grid_operator:
            raise AuthorizationError("only the grid operator reports state of charge", expected=params.grid_operator,
                                     got=tx.sender)
        unit = arg(tx, "unit", str)
        soc = _nonneg(tx, "soc_wh")
        rec = farmer_record(state, unit)
        if rec is None or not rec.get("storage"):
            raise ProtocolError("not a storage unit", got=unit)
        if soc > int(rec["storage"]["energy_wh"]):
            raise ProtocolError("state of charge above the storage's energy",
                                expected=f"<= {rec['storage']['energy_wh']} Wh", got=soc)
        rec["storage"]["soc_wh"] = soc
        state.set_json(farmer_key(unit), rec)
        return [_storage_event("market.storage_soc", params, unit, rec)]

    return {"poc.fill": op_fill, "poc.erase": op_erase, "market.demand": op_demand, "market.offer": op_offer,
            "market.report": op_report, "market.import_reputation": op_import_reputation,
            "market.storage_register": op_storage_register, "market.storage_soc": op_storage_soc}


def _storage_event(kind: str, params: PocAppParams, unit: str, rec: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "unit": unit, "energy_wh": rec["storage"]["energy_wh"], "soc_wh": rec["storage"]["soc_wh"],
            "charge_kw": storage_kw(params, rec), "plots_kw": plots_kw(params, rec),
            "over_committed": over_committed(params, rec)}


def _settle(state: ChainState, params: PocAppParams, rnd: int, awards: dict[str, Any], service: str, unit: str,
            delivered: int) -> list[dict[str, Any]]:
    award = awards[service]["units"][unit]
    price = int(awards[service]["price"])
    _move(state, ESCROW_ACCOUNT, unit, params.settle_denom, delivered * price)
    _move(state, ESCROW_ACCOUNT, params.grid_operator, params.settle_denom, (award["kw"] - delivered) * price)
    award["delivered"] = delivered
    rec = farmer_record(state, unit) or new_farmer_record()
    rec["awarded_kw"] += award["kw"]
    rec["delivered_kw"] += delivered
    rec["awards"] += 1
    extra: dict[str, Any] = {}
    if rec.get("storage"):  # the delivery discharged it
        used = delivered * int(awards[service]["duration_ms"]) // 3600
        rec["storage"]["soc_wh"] = max(0, int(rec["storage"]["soc_wh"]) - used)
        extra = {"soc_wh": rec["storage"]["soc_wh"], "over_committed": over_committed(params, rec)}
    state.set_json(farmer_key(unit), rec)
    return [{"type": "market.settled", "round": rnd, "service": service, "unit": unit, "awarded_kw": award["kw"],
             "delivered_kw": delivered, "paid": delivered * price, "response_ppm": response_ppm(params, rec),
             **extra}]


def _store_awards(state: ChainState, rnd: int, awards: dict[str, Any]) -> None:
    settled = all(a["delivered"] is not None for svc in awards.values() for a in svc["units"].values())
    if settled:
        state.delete(awards_key(rnd))
    else:
        state.set_json(awards_key(rnd), awards)


# -- clearing ---------------------------------------------------------------------------------


def clear_service(params: PocAppParams, demand: dict[str, Any], offers: dict[str, dict[str, Any]],
                  records: dict[str, dict[str, Any]]) -> tuple[int | None, dict[str, int]]:
    """Clear one demand against its offers: ``(clearing price or None, {unit: awarded kW})``. Pure arithmetic."""
    amount, cap = int(demand["amount_kw"]), int(demand["price_cap"])
    floor = int(demand.get("min_response_ppm", 0))
    duration = int(demand.get("duration_ms", 0))
    eligible = [(u, o) for u, o in offers.items() if o["price"] <= cap and o["amount_kw"] > 0
                and response_ppm(params, records.get(u) or new_farmer_record()) >= floor]

    def rank(item: tuple[str, dict[str, Any]]) -> tuple[int, int, int, str]:
        unit, offer = item
        rec = records.get(unit) or new_farmer_record()
        return (int(offer["price"]), -response_ppm(params, rec), -int(rec["committed_bytes"]), unit)

    eligible.sort(key=rank)
    awarded: dict[str, int] = {}
    remaining = amount
    share_cap = max(1, amount * params.max_unit_share_pct // 100)
    for limit_to_share in (True, False):
        for unit, offer in eligible:
            if not remaining:
                break
            rec = records.get(unit) or new_farmer_record()
            room = min(int(offer["amount_kw"]), max_kw(params, rec))
            if rec.get("storage") and duration:  # what its charge sustains for the demand's duration
                room = min(room, int(rec["storage"]["soc_wh"]) * 3600 // duration)
            room -= awarded.get(unit, 0)
            if limit_to_share:
                room = min(room, share_cap)
            take = min(room, remaining)
            if take > 0:
                awarded[unit] = awarded.get(unit, 0) + take
                remaining -= take
    if not awarded:
        return None, {}
    price = max(int(offers[u]["price"]) for u in awarded)
    return price, awarded


def market_clear_hook(params: PocAppParams) -> BlockHook:
    """A BlockHook: at the first block of each round, clear the previous round and auto-settle old awards."""

    def hook(state: ChainState, ctx: BlockContext) -> list[dict[str, Any]]:
        if ctx.height % params.round_blocks or ctx.height < params.round_blocks:
            return []
        rnd = params.round_of(ctx.height) - 1
        events = _auto_settle(state, params, rnd - params.report_rounds)
        blob = state.get_json(round_key(rnd))
        if blob is None:
            return events
        awards: dict[str, Any] = {}
        for service in sorted(blob["demands"]):
            demand = blob["demands"][service]
            offers = blob["offers"].get(service, {})
            records = {u: farmer_record(state, u) or new_farmer_record() for u in offers}
            price, awarded = clear_service(params, demand, offers, records)
            cost = 0 if price is None else price * sum(awarded.values())
            _move(state, ESCROW_ACCOUNT, params.grid_operator, params.settle_denom, int(demand["escrow"]) - cost)
            if awarded:
                awards[service] = {"price": price, "duration_ms": demand["duration_ms"],
                                   "units": {u: {"kw": kw, "delivered": None} for u, kw in sorted(awarded.items())}}
            events.append({"type": "market.cleared", "round": rnd, "service": service,
                           "demand_kw": demand["amount_kw"], "awarded_kw": sum(awarded.values()), "price": price,
                           "units": dict(sorted(awarded.items())), "refund": int(demand["escrow"]) - cost})
        state.delete(round_key(rnd))
        if awards:
            state.set_json(awards_key(rnd), awards)
        return events

    return hook


def _auto_settle(state: ChainState, params: PocAppParams, rnd: int) -> list[dict[str, Any]]:
    if rnd < 0:
        return []
    awards = state.get_json(awards_key(rnd))
    if awards is None:
        return []
    events: list[dict[str, Any]] = []
    for service in sorted(awards):
        for unit in sorted(awards[service]["units"]):
            award = awards[service]["units"][unit]
            if award["delivered"] is None:
                events += _settle(state, params, rnd, awards, service, unit, int(award["kw"]))
    state.delete(awards_key(rnd))
    return events
