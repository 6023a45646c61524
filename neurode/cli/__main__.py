"""``python -m neurode.cli``: the ``neurode`` command line."""

from neurode.cli.app import main

main()
