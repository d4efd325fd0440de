"""`python -m cloud.cli`: the same as the `fleet` command."""

from cloud.cli.app import main

main()
