"""`python -m qruntime`: the qruntime command (cli.py)."""
import sys

from .cli import main

sys.exit(main())
