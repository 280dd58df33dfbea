# parkrelay — the two commands a newcomer needs are `make demo` and `make test`.
# Both run `make setup` first, which is idempotent: it builds .venv from requirements.lock.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup fabric cometbft chromium faketime lint test test-unit test-integration demo bench clean

setup: $(STAMP) fabric cometbft chromium faketime

# Debian's chromium for the status page's browser tests (Playwright drives it by its executable path)
chromium:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "warning: chromium not installed; the status page's browser tests will be skipped" >&2

# Debian's libfaketime: `parkrelay doctor`'s clock-skew test runs one witness with its wall clock shifted
faketime:
	@test -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 || { command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfaketime >/dev/null; } || \
		echo "warning: libfaketime not installed; the doctor's clock-skew test will be skipped" >&2

# Hyperledger Fabric's peer, orderer, osnadmin and configtxgen, built once from Fabric's Go module at the pin in
# deploy/fabric/gomodule and cached outside the repository (PARKRELAY_FABRIC_HOME, default ~/.cache/parkrelay/fabric-2.5.9)
fabric:
	@bash deploy/fabric/build.sh

# CometBFT's cometbft v0.38.25 (the relay chain's optional engine, issue 17), built once from its Go module and cached
# outside the repository (PARKRELAY_COMETBFT_HOME, default ~/.cache/parkrelay/cometbft-0.38.25)
cometbft:
	@bash deploy/cometbft/build.sh

$(STAMP): requirements.lock pyproject.toml chains/ethereum/package-lock.json
	@test -n "$(PYTHON)" || { echo "error: python3.11 not found on PATH" >&2; exit 1; }
	@command -v npm >/dev/null || { echo "error: npm not found on PATH (the Ethereum park needs anvil and solc from npm)" >&2; exit 1; }
	# the Ethereum park's anvil node and solcjs compiler, pinned by chains/ethereum/package-lock.json
	npm ci --prefix chains/ethereum --no-audit --no-fund --loglevel=error
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# --no-deps: the lock file is the complete, reproducible set
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
# (setuptools' notice that every editable install of a flat layout gets, a dozen lines of asterisks, is silenced by
# its exact text; any other warning of the build still shows)
	PYTHONWARNINGS="ignore:Editable installation:UserWarning" $(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check protocol chains adapters relay tests bench
	$(BIN)/mypy --strict protocol relay/chain/abci
	$(BIN)/mypy chains/dpos/light_client.py chains/poc/light_client.py chains/ethereum/light_client.py
	$(BIN)/mypy --strict chains/fabric/proto.py chains/fabric/msp.py chains/fabric/config.py chains/fabric/attestation.py \
		chains/fabric/light_client.py chains/fabric/errors.py
	$(BIN)/lint-imports
	# the committed contract artifacts are what the committed Solidity compiles to
	$(BIN)/python -m chains.ethereum.compile --check

# two pytest-xdist workers: most process tests wait on block intervals, not on a core. Each module (each park pair
# of test_four_phases) runs whole on one worker, in order (tests/conftest.py); PYTEST_WORKERS=0 runs it serially
PYTEST_WORKERS ?= 2

test: setup lint
	$(BIN)/python -m pytest tests --durations=15 -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder

test-unit: setup
	$(BIN)/python -m pytest tests -m "not integration"

test-integration: setup
	$(BIN)/python -m pytest tests -m integration

demo: setup
	$(BIN)/parkrelay devnet demo --config deploy/devnet.toml

bench: setup
	$(BIN)/python bench/light_clients.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
