"""The Ethereum park's market off chain (docs/research.md#seed-001): the feeder model and a mirror of the
``EnergyMarket`` contract's clearing (:mod:`.feeder`), and the members' bidding agents (:mod:`.agents`): risk-attitude
bilateral bidding and best-response dynamics with the utility corrected by the use-of-system charge.

Bids are computed here, off chain; clearing and settlement run on chain (``contracts/EnergyMarket.sol``). Pure
Python, no chain access: the client that submits bids is ``adapters.ethereum.market``.
"""

from chains.ethereum.market.agents import (
    ATTITUDE_ALPHA,
    BestResponseResult,
    Member,
    RiskAttitudeAgent,
    best_response_dynamics,
    utilities,
)
from chains.ethereum.market.feeder import Bid, Feeder, Line, Trade, clear

__all__ = ["ATTITUDE_ALPHA", "BestResponseResult", "Bid", "Feeder", "Line", "Member", "RiskAttitudeAgent", "Trade",
           "best_response_dynamics", "clear", "utilities"]
