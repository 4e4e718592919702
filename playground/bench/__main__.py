"""`python -m playground.bench`: the benchmark engine's command line."""

import sys

from .engine import main

sys.exit(main())
