"""``python -m attnviz.train``: the same as ``python -m attnviz train``."""
import sys

from .cli import main

sys.exit(main())
