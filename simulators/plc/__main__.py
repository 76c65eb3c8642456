"""``python -m simulators.plc``: the same options as ``simulators plc``."""

import sys

from simulators.plc.cli import main

if __name__ == "__main__":  # importing the package's modules one by one must not run it
    sys.exit(main())
