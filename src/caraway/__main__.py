"""``python -m caraway``: the same as the ``caraway`` command."""

from caraway.cli.main import main

if __name__ == "__main__":
    main()
