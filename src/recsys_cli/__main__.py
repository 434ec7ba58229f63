"""`python -m recsys_cli` is the `recsys` command (the supervisor starts workers so)."""

from recsys_cli.main import main

main()
