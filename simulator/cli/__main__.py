"""`python -m simulator.cli`: the same as the `maillab` command."""

import sys

from . import main

sys.exit(main())
