"""Allow ``python -m tms``."""

from tms.cli import main

main()
