"""``python -m dispatcher.cli``: the same as the ``pushpool`` command."""

from dispatcher.cli import main

main()
