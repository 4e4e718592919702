"""Start the GPT-2 playground: `python app.py --help` lists the flags."""

import sys

from playground.cli import main

if __name__ == "__main__":
    sys.exit(main())
