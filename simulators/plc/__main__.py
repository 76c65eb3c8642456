"""``python -m simulators.plc``: the same options as ``simulators plc``."""

import sys

from simulators.plc.cli import main

sys.exit(main())
