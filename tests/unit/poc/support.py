"""Helpers shared by the PoC app and market tests: a genesis config, signed txs, blocks, conservation sums."""

from __future__ import annotations

import hashlib
from typing import Any

from chains.common.state import ChainState
from chains.common.tx import App, BlockContext, Tx
from chains.poc.testing import farmer_plot_nonce, farmer_signer
from protocol.crypto import Ed25519Signer

CHAIN = "poc-test"
GRID = "grid"


def signer(name: str) -> Ed25519Signer:
    """farmer-a / farmer-b use the test farmers' keys (their plots are bound to them); others get label keys."""
    if name.startswith("farmer-"):
        return farmer_signer(name)
    return Ed25519Signer(hashlib.sha256(b"parkrelay/TEST-ONLY/poc/account/" + name.encode()).digest())


def nonce(label: str, i: int = 0) -> str:
    return hashlib.sha256(f"unit-plot/{label}/{i}".encode()).hexdigest()


def genesis_config(*, plots: dict[str, int] | None = None, app: dict[str, Any] | None = None,
                   farmer_a_plot: bool = True) -> dict[str, Any]:
    """Accounts: grid (100000 pcc), farmer-a, farmer-b, u1..u4 (1000 pcc each).

    ``plots`` gives u1..u4 genesis plots (unproven, no files: the market needs only the commitment);
    farmer-a's real plot is committed at genesis, farmer-b's is not (it must fill or farm it).
    """
    plots = {"u1": 1, "u2": 2, "u3": 1, "u4": 1} if plots is None else plots
    names = [GRID, "farmer-a", "farmer-b", "u1", "u2", "u3", "u4"]
    farmers = [{"name": n, "plots": [{"plot_nonce": nonce(n, i), "k": 21} for i in range(c)]} for n, c in plots.items()]
    if farmer_a_plot:
        farmers.append({"name": "farmer-a", "plots": [{"plot_nonce": farmer_plot_nonce("farmer-a").hex(), "k": 21}]})
    return {
        "chain_id": CHAIN,
        "genesis_time_ms": 1_700_000_000_000,
        "consensus": {"target_interval_ms": 1000, "initial_difficulty": 2000, "retarget_window": 16},
        "app": {"grid_operator": GRID, "round_blocks": 10, "block_reward": 10, **(app or {})},
        "accounts": [{"name": n, "pubkey": signer(n).pubkey.hex()} for n in names],
        "balances": [{"account": GRID, "denom": "pcc", "amount": 100_000}]
        + [{"account": n, "denom": "pcc", "amount": 1000} for n in names[1:]],
        "farmers": farmers,
    }


class Runner:
    """Executes txs in blocks of a chain with one explicit clock (height -> time)."""

    def __init__(self, app: App, state: ChainState) -> None:
        self.app = app
        self.state = state
        self.height = 0
        self.nonces: dict[str, int] = {}

    def ctx(self) -> BlockContext:
        return BlockContext(CHAIN, self.height, 1_700_000_000_000 + 1000 * self.height, "farmer-a")

    def begin(self, height: int) -> list[dict[str, Any]]:
        """Start block ``height`` (runs the begin-block hooks: market clearing at round starts)."""
        self.height = height
        return self.app.begin_block(self.state, self.ctx())

    def tx(self, sender: str, op: str, **args: Any) -> list[dict[str, Any]]:
        n = self.nonces.get(sender, 0)
        tx = Tx.signed(signer(sender), CHAIN, sender, n, op, args)
        events = self.app.execute_tx(self.state, tx, self.ctx())
        self.nonces[sender] = n + 1
        return events


def balances(state: ChainState, denom: str = "pcc") -> dict[str, int]:
    out = {}
    for key, value in state.prefix_items(b"balances/"):
        _, account, d = key.decode().split("/", 2)
        if d == denom:
            out[account] = int(value.decode())
    return out


def assert_conserved(state: ChainState, denom: str = "pcc") -> None:
    """Every unit of ``denom`` held by someone, escrow included, is accounted for by the issued supply."""
    assert sum(balances(state, denom).values()) == state.get_int(f"poc/supply/{denom}".encode())
