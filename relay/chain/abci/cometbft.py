"""Where the CometBFT binary this package is built against lives (``docs``: /work/shared/DEPENDENCIES.md, CometBFT).

``$PARKRELAY_COMETBFT_HOME/bin/cometbft``, by default ``~/.cache/parkrelay/cometbft-0.38.25/bin/cometbft`` (built
with ``CGO_ENABLED=0 go install github.com/cometbft/cometbft/cmd/cometbft@v0.38.25``). The ABCI codec is pinned to
that version: :data:`COMETBFT_VERSION`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["COMETBFT_VERSION", "cometbft_binary", "cometbft_home"]

COMETBFT_VERSION: Final = "0.38.25"
"""The CometBFT release whose ``proto/tendermint/abci/types.proto`` :mod:`relay.chain.abci.types` follows."""


def cometbft_home() -> Path:
    """``$PARKRELAY_COMETBFT_HOME``, or ``~/.cache/parkrelay/cometbft-0.38.25``."""
    env = os.environ.get("PARKRELAY_COMETBFT_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "parkrelay" / f"cometbft-{COMETBFT_VERSION}"


def cometbft_binary() -> Path:
    """The ``cometbft`` executable under :func:`cometbft_home` (it may not exist: callers check)."""
    return cometbft_home() / "bin" / "cometbft"
