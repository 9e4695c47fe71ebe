"""`python -m rag ...`: see rag/cli.py."""
import sys

from rag.cli import main

sys.exit(main())
