"""``python -m autodriz`` is the same as the ``autodriz`` command."""

from autodriz.cli import console

if __name__ == "__main__":
    console()
