"""``python -m relay.cli``: the ``parkrelay`` command, whose home is :mod:`relay.ops.cli` (node processes, tests and
scripts start it by this name)."""

import sys

from relay.ops.cli import main

if __name__ == "__main__":
    sys.exit(main())
