"""``python -m autodriz`` is the same as the ``autodriz`` command."""

import sys

from autodriz.cli import main

if __name__ == "__main__":
    sys.exit(main())
