"""`python -m rag ...`: see rag/cli.py."""
import sys

from .cli import main

sys.exit(main())
