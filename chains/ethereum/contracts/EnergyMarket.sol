// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {CodecInvalid, InsufficientFunds, RoundState, RoundTiming, Unauthorized} from "./ParkErrors.sol";

interface IMarketRecord {
    function record(address participant, uint256 contractedWh, uint256 deliveredWh) external;
    function participantOf(address participant) external view returns (bool admitted, uint256 contractedWh,
        uint256 deliveredWh);
    function operator() external view returns (address);
}

interface IMarketToken {
    function transferFrom(address from, address to, uint256 value) external returns (bool);
    function transfer(address to, uint256 value) external returns (bool);
}

/// @title The Ethereum park's distributed-generation market (docs/research.md#seed-001): trading rounds, sealed
///        bids computed off chain, a double auction cleared on chain with a use-of-system charge, a security check
///        with congestion management on the park's radial feeder, and settlement of delivered against contracted
///        energy that feeds the park's `DeliveryRecord` (the reputation it attests, `eth-delivery-record/v1`).
/// @notice Units: energy in Wh; prices in wei per Wh. A seller escrows the energy it offers in the park's `kWh`
///         token; a buyer escrows `quantity × price` wei (its price is the most it pays per Wh, use-of-system
///         charge included). Clearing matches, among all (seller, buyer) pairs, the one with the largest surplus
///         `bid − ask − charge(distance)` first, so with a positive charge rate nearer pairs clear first; the pair
///         trades at `ask + surplus/2` to the seller, the buyer paying that plus the charge, which goes to the
///         park operator (the network owner). Each trade's flow is checked against every line on its path
///         (radial feeder, flows netted, |flow| ≤ limit): a trade that would overload a line is curtailed to the
///         headroom left (`Curtailed`), and the pair skipped if none is. Settlement takes the metered delivery of
///         each trade: the buyer gets the delivered kWh and pays for them only; the rest goes back.
/// @dev Wei is credited and withdrawn (`withdraw`), never pushed; the totals held (`escrowedWei`, `escrowedWh`)
///      always equal the contract's balances (tests/ethereum/test_market.py checks conservation).
contract EnergyMarket {
    uint8 internal constant NONE = 0;
    uint8 internal constant OPEN = 1;
    uint8 internal constant CLEARED = 2;
    uint8 internal constant SETTLED = 3;
    /// @notice Bounds that keep a clearing's gas bounded.
    uint256 public constant MAX_BIDS = 48;
    uint256 public constant MAX_BUSES = 64;
    uint256 public constant MAX_DEPTH = 16;

    struct Bus {
        uint16 parent;
        uint8 depth;
        bool exists;
        uint32 lengthM;   // the line from this bus to its parent: electrical length (m)
        uint64 limitWh;   // that line's limit over a round (Wh)
    }

    struct Bid {
        address member;
        uint16 bus;
        bool seller;
        uint64 quantityWh;
        uint64 priceWeiPerWh;
    }

    struct Trade {
        uint32 sellerBid;
        uint32 buyerBid;
        uint64 quantityWh;
        uint64 priceWeiPerWh;   // to the seller
        uint64 chargeWeiPerWh;  // use-of-system charge, to the operator
    }

    struct Round {
        uint64 closesAt;        // block timestamp (s)
        uint64 chargeWeiPerWhKm;
        uint8 state;
    }

    address public immutable operator;
    IMarketRecord public immutable deliveryRecord;
    IMarketToken public immutable energyToken;

    uint256 public roundCount;
    uint256 public busCount;
    uint256 public escrowedWei;
    uint256 public escrowedWh;

    mapping(uint256 => Bus) internal _buses;
    mapping(address => uint256) internal _memberBus;  // bus + 1 (0: not a member)
    mapping(uint256 => Round) internal _rounds;
    mapping(uint256 => Bid[]) internal _bids;
    mapping(uint256 => Trade[]) internal _trades;
    mapping(address => uint256) public claimableWei;

    event BusSet(uint256 indexed bus, uint256 parent, uint256 lengthM, uint256 limitWh);
    event MemberSet(address indexed member, uint256 bus);
    event RoundOpened(uint256 indexed roundId, uint64 closesAt, uint64 chargeWeiPerWhKm);
    event BidSubmitted(uint256 indexed roundId, uint256 index, address indexed member, bool seller, uint64 quantityWh,
        uint64 priceWeiPerWh);
    event TradeCleared(uint256 indexed roundId, uint256 index, address indexed seller, address indexed buyer,
        uint64 quantityWh, uint64 priceWeiPerWh, uint64 chargeWeiPerWh, uint256 distanceM);
    event Curtailed(uint256 indexed roundId, uint256 sellerBid, uint256 buyerBid, uint256 wantedWh, uint256 clearedWh,
        uint256 line);
    event RoundCleared(uint256 indexed roundId, uint256 trades, uint256 clearedWh);
    event RoundSettled(uint256 indexed roundId, uint256 contractedWh, uint256 deliveredWh);

    constructor(address deliveryRecord_, address energyToken_) {
        if (deliveryRecord_ == address(0) || energyToken_ == address(0)) revert CodecInvalid();
        deliveryRecord = IMarketRecord(deliveryRecord_);
        energyToken = IMarketToken(energyToken_);
        operator = IMarketRecord(deliveryRecord_).operator();
    }

    modifier onlyOperator() {
        if (msg.sender != operator) revert Unauthorized(operator, msg.sender);
        _;
    }

    // --- the park's feeder and its members ----------------------------------------------------------------------

    /// @notice Add bus `bus` behind `parent` (bus 0, the substation, first, its own parent), the line to the parent
    ///         `lengthM` long with limit `limitWh` per round. Buses are added once (the feeder stays a tree).
    function setBus(uint256 bus, uint256 parent, uint32 lengthM, uint64 limitWh) external onlyOperator {
        if (bus != busCount || bus >= MAX_BUSES || _buses[bus].exists) revert CodecInvalid();
        uint8 depth;
        if (bus == 0) {
            if (parent != 0) revert CodecInvalid();
        } else {
            Bus storage p = _buses[parent];
            if (parent >= bus || !p.exists || p.depth + 1 > MAX_DEPTH || limitWh == 0) revert CodecInvalid();
            depth = p.depth + 1;
        }
        _buses[bus] = Bus(uint16(parent), depth, true, lengthM, limitWh);
        busCount = bus + 1;
        emit BusSet(bus, parent, lengthM, limitWh);
    }

    /// @notice Change a line's limit (a security constraint the operator learns).
    function setLineLimit(uint256 bus, uint64 limitWh) external onlyOperator {
        if (bus == 0 || !_buses[bus].exists || limitWh == 0) revert CodecInvalid();
        _buses[bus].limitWh = limitWh;
        emit BusSet(bus, _buses[bus].parent, _buses[bus].lengthM, limitWh);
    }

    /// @notice Connect `member` at `bus`: only a participant the delivery record admitted (locally, or by imported
    ///         reputation through `DeliveryRecord.admitImported`).
    function setMember(address member, uint256 bus) external onlyOperator {
        if (!_buses[bus].exists || bus == 0) revert CodecInvalid();
        (bool admitted,,) = deliveryRecord.participantOf(member);
        if (!admitted) revert Unauthorized(member, address(0));
        _memberBus[member] = bus + 1;
        emit MemberSet(member, bus);
    }

    function busOf(address member) external view returns (bool isMember, uint256 bus) {
        uint256 b = _memberBus[member];
        return (b != 0, b == 0 ? 0 : b - 1);
    }

    function busInfo(uint256 bus) external view returns (bool exists, uint256 parent, uint256 depth, uint256 lengthM,
        uint256 limitWh) {
        Bus storage b = _buses[bus];
        return (b.exists, b.parent, b.depth, b.lengthM, b.limitWh);
    }

    // --- rounds and bids ------------------------------------------------------------------------------------------

    /// @notice Open a trading round accepting bids until `closesAt` (block time, s), with a use-of-system charge of
    ///         `chargeWeiPerWhKm` wei per Wh per km of electrical distance (0: no charge).
    function openRound(uint64 closesAt, uint64 chargeWeiPerWhKm) external onlyOperator returns (uint256 roundId) {
        if (closesAt <= block.timestamp) revert RoundTiming(roundCount + 1, uint256(closesAt) * 1000,
            block.timestamp * 1000);
        roundId = ++roundCount;
        _rounds[roundId] = Round(closesAt, chargeWeiPerWhKm, OPEN);
        emit RoundOpened(roundId, closesAt, chargeWeiPerWhKm);
    }

    /// @notice A sealed bid (computed off chain) while the round is open. A seller escrows `quantityWh` kWh tokens
    ///         (approve the market first); a buyer sends exactly `quantityWh × priceWeiPerWh` wei.
    function submitBid(uint256 roundId, bool seller, uint64 quantityWh, uint64 priceWeiPerWh)
        external payable returns (uint256 index)
    {
        Round storage r = _rounds[roundId];
        if (r.state != OPEN) revert RoundState(roundId, OPEN, r.state);
        if (block.timestamp >= r.closesAt) {
            revert RoundTiming(roundId, uint256(r.closesAt) * 1000, block.timestamp * 1000);
        }
        uint256 bus = _memberBus[msg.sender];
        if (bus == 0) revert Unauthorized(address(0), msg.sender);
        if (quantityWh == 0 || priceWeiPerWh == 0 || _bids[roundId].length >= MAX_BIDS) revert CodecInvalid();
        if (seller) {
            if (msg.value != 0) revert CodecInvalid();
            escrowedWh += quantityWh;
            energyToken.transferFrom(msg.sender, address(this), quantityWh);
        } else {
            uint256 need = uint256(quantityWh) * priceWeiPerWh;
            if (msg.value != need) revert InsufficientFunds(msg.value, need);
            escrowedWei += need;
        }
        index = _bids[roundId].length;
        _bids[roundId].push(Bid(msg.sender, uint16(bus - 1), seller, quantityWh, priceWeiPerWh));
        emit BidSubmitted(roundId, index, msg.sender, seller, quantityWh, priceWeiPerWh);
    }

    // --- clearing: double auction, use-of-system charge, security check and congestion management ------------------

    struct Grid {
        uint16[] parent;
        uint8[] depth;
        uint32[] lengthM;
        int256[] limit;
        int256[] flow;   // per line (bus -> parent), positive towards the substation
    }

    function _grid() internal view returns (Grid memory g) {
        uint256 n = busCount;
        g.parent = new uint16[](n);
        g.depth = new uint8[](n);
        g.lengthM = new uint32[](n);
        g.limit = new int256[](n);
        g.flow = new int256[](n);
        for (uint256 i = 0; i < n; ++i) {
            Bus storage b = _buses[i];
            (g.parent[i], g.depth[i], g.lengthM[i], g.limit[i]) = (b.parent, b.depth, b.lengthM, int256(uint256(b.limitWh)));
        }
    }

    /// @dev Electrical distance (m) between two buses: the lines on the path through their common ancestor.
    function _distance(Grid memory g, uint256 a, uint256 b) internal pure returns (uint256 d) {
        while (a != b) {
            if (g.depth[a] >= g.depth[b]) {
                d += g.lengthM[a];
                a = g.parent[a];
            } else {
                d += g.lengthM[b];
                b = g.parent[b];
            }
        }
    }

    /// @dev Security check: the most energy (≤ want) that can flow from bus `s` to bus `b` with every line on the
    ///      path within its limit, and the first line (bus id) that binds.
    function _headroom(Grid memory g, uint256 s, uint256 b, uint256 want) internal pure
        returns (uint256 q, uint256 line)
    {
        int256 best = int256(want);
        while (s != b) {
            int256 room;
            uint256 at;
            if (g.depth[s] >= g.depth[b]) {
                room = g.limit[s] - g.flow[s];   // upwards: flow + q <= limit
                at = s;
                s = g.parent[s];
            } else {
                room = g.limit[b] + g.flow[b];   // downwards: flow - q >= -limit
                at = b;
                b = g.parent[b];
            }
            if (room < best) {
                best = room < 0 ? int256(0) : room;
                line = at;
            }
        }
        q = uint256(best);
    }

    function _carry(Grid memory g, uint256 s, uint256 b, uint256 q) internal pure {
        int256 f = int256(q);
        while (s != b) {
            if (g.depth[s] >= g.depth[b]) {
                g.flow[s] += f;
                s = g.parent[s];
            } else {
                g.flow[b] -= f;
                b = g.parent[b];
            }
        }
    }

    /// @notice Clear a closed round (anyone may): repeatedly match the (seller, buyer) pair with the largest surplus
    ///         `bid − ask − charge` (ties: shorter distance, then earlier bids), curtailed to the lines' headroom.
    ///         Unmatched escrow goes back (kWh transferred, wei credited), as does a buyer's price improvement.
    function clear(uint256 roundId) external {
        Round storage r = _rounds[roundId];
        if (r.state != OPEN) revert RoundState(roundId, OPEN, r.state);
        if (block.timestamp < r.closesAt) {
            revert RoundTiming(roundId, uint256(r.closesAt) * 1000, block.timestamp * 1000);
        }
        r.state = CLEARED;
        Bid[] storage bids = _bids[roundId];
        uint256 n = bids.length;
        Bid[] memory bs = new Bid[](n);
        uint256[] memory left = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            bs[i] = bids[i];
            left[i] = bs[i].quantityWh;
        }
        Grid memory g = _grid();
        // the crossing pairs, each once, in clearing order: surplus `bid − ask − charge` descending, then distance,
        // seller and buyer ascending. The order is static (the surplus depends on the pair alone), so walking it once
        // is the greedy "best remaining pair first" rule; a pair visited trades until one side is exhausted or
        // a line binds.
        uint256[] memory keys = new uint256[](n * n);
        uint256 pairs;
        for (uint256 i = 0; i < n; ++i) {
            if (!bs[i].seller) continue;
            for (uint256 j = 0; j < n; ++j) {
                if (bs[j].seller) continue;
                uint256 d = _distance(g, bs[i].bus, bs[j].bus);
                uint256 cost = bs[i].priceWeiPerWh + uint256(r.chargeWeiPerWhKm) * d / 1000;
                if (bs[j].priceWeiPerWh < cost) continue;
                keys[pairs++] = ((bs[j].priceWeiPerWh - cost) << 128) | ((type(uint32).max - d) << 64)
                    | ((type(uint32).max - i) << 32) | (type(uint32).max - j);
            }
        }
        _sortDescending(keys, 0, pairs);
        uint256 cleared;
        Trade[] storage trades = _trades[roundId];
        for (uint256 k = 0; k < pairs; ++k) {
            uint256 key = keys[k];
            uint256 si = type(uint32).max - ((key >> 32) & type(uint32).max);
            uint256 bi = type(uint32).max - (key & type(uint32).max);
            uint256 want = left[si] < left[bi] ? left[si] : left[bi];
            if (want == 0) continue;
            (uint256 q, uint256 line) = _headroom(g, bs[si].bus, bs[bi].bus, want);
            if (q < want) {
                emit Curtailed(roundId, si, bi, want, q, line);
                if (q == 0) continue;
            }
            _carry(g, bs[si].bus, bs[bi].bus, q);
            left[si] -= q;
            left[bi] -= q;
            uint256 surplus = key >> 128;
            uint256 dist = type(uint32).max - ((key >> 64) & type(uint32).max);
            uint256 charge = bs[bi].priceWeiPerWh - bs[si].priceWeiPerWh - surplus;
            uint256 price = bs[si].priceWeiPerWh + surplus / 2;
            // the buyer's price improvement on this quantity
            uint256 back = q * (bs[bi].priceWeiPerWh - price - charge);
            if (back != 0) claimableWei[bs[bi].member] += back;
            trades.push(Trade(uint32(si), uint32(bi), uint64(q), uint64(price), uint64(charge)));
            emit TradeCleared(roundId, trades.length - 1, bs[si].member, bs[bi].member, uint64(q), uint64(price),
                uint64(charge), dist);
            cleared += q;
        }
        // unmatched escrow back
        uint256 backWh;
        for (uint256 i = 0; i < n; ++i) {
            if (left[i] == 0) continue;
            if (bs[i].seller) {
                backWh += left[i];
                energyToken.transfer(bs[i].member, left[i]);
            } else {
                claimableWei[bs[i].member] += left[i] * bs[i].priceWeiPerWh;
            }
        }
        escrowedWh -= backWh;
        emit RoundCleared(roundId, trades.length, cleared);
    }

    /// @dev In-place quicksort of `a[lo:hi]`, largest first (keys are distinct: they hold the pair's indexes).
    function _sortDescending(uint256[] memory a, uint256 lo, uint256 hi) internal pure {
        while (hi > lo + 1) {
            uint256 pivot = a[lo + (hi - 1 - lo) / 2];
            uint256 i = lo;
            uint256 j = hi - 1;
            while (true) {
                while (a[i] > pivot) ++i;
                while (a[j] < pivot) --j;
                if (i >= j) break;
                (a[i], a[j]) = (a[j], a[i]);
                ++i;
                --j;
            }
            // Hoare partition: [lo, j] and [j + 1, hi); recurse into the smaller part, loop on the larger
            if (j + 1 - lo < hi - j - 1) {
                _sortDescending(a, lo, j + 1);
                lo = j + 1;
            } else {
                _sortDescending(a, j + 1, hi);
                hi = j + 1;
            }
        }
    }

    // --- settlement with prediction error ------------------------------------------------------------------------

    /// @notice Settle a cleared round with the metered energy each trade delivered (operator: the park's metering),
    ///         one figure per trade in order. Delivered energy above the contract counts as the contract. The buyer
    ///         gets the delivered kWh and pays price and charge for them only; the seller gets its undelivered kWh
    ///         back; each seller's contracted and delivered energy goes to the delivery record. Once per round.
    function settle(uint256 roundId, uint64[] calldata deliveredWh) external onlyOperator {
        Round storage r = _rounds[roundId];
        if (r.state != CLEARED) revert RoundState(roundId, CLEARED, r.state);
        Trade[] storage trades = _trades[roundId];
        if (deliveredWh.length != trades.length) revert CodecInvalid();
        r.state = SETTLED;
        Bid[] storage bids = _bids[roundId];
        uint256 contracted;
        uint256 delivered;
        for (uint256 t = 0; t < trades.length; ++t) {
            Trade memory tr = trades[t];
            address seller = bids[tr.sellerBid].member;
            address buyer = bids[tr.buyerBid].member;
            uint256 q = tr.quantityWh;
            uint256 d = deliveredWh[t] < q ? deliveredWh[t] : q;
            uint256 unit = uint256(tr.priceWeiPerWh) + tr.chargeWeiPerWh;
            claimableWei[seller] += d * tr.priceWeiPerWh;
            claimableWei[operator] += d * tr.chargeWeiPerWh;
            claimableWei[buyer] += (q - d) * unit;
            if (d != 0) energyToken.transfer(buyer, d);
            if (q != d) energyToken.transfer(seller, q - d);
            deliveryRecord.record(seller, q, d);
            contracted += q;
            delivered += d;
        }
        escrowedWh -= contracted;
        // escrowedWei counts every wei held: credited wei stays until withdrawn
        emit RoundSettled(roundId, contracted, delivered);
    }

    /// @notice Withdraw every wei credited to the caller.
    function withdraw() external {
        uint256 amount = claimableWei[msg.sender];
        if (amount == 0) revert InsufficientFunds(0, 1);
        claimableWei[msg.sender] = 0;
        escrowedWei -= amount;
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert Unauthorized(msg.sender, address(0));
    }

    // --- views ---------------------------------------------------------------------------------------------------

    function roundOf(uint256 roundId) external view returns (uint8 state, uint64 closesAt, uint64 chargeWeiPerWhKm,
        uint256 bids, uint256 trades) {
        Round storage r = _rounds[roundId];
        return (r.state, r.closesAt, r.chargeWeiPerWhKm, _bids[roundId].length, _trades[roundId].length);
    }

    function bidOf(uint256 roundId, uint256 index) external view returns (Bid memory) {
        return _bids[roundId][index];
    }

    function tradesOf(uint256 roundId) external view returns (Trade[] memory) {
        return _trades[roundId];
    }

    /// @notice Electrical distance (m) between two buses.
    function distance(uint256 a, uint256 b) external view returns (uint256) {
        if (a >= busCount || b >= busCount) revert CodecInvalid();
        return _distance(_grid(), a, b);
    }
}
