"""`python -m app.cli`: the same as the `distleech` script."""

from app.cli.main import main

main()
