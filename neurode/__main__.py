"""``python -m neurode``: the ``neurode`` command line, for environments without the console script."""

from neurode.cli.app import main

main()
