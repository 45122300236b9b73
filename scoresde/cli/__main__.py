"""``python -m scoresde.cli``: the same as the ``scoresde`` console script."""
import sys

from . import main

sys.exit(main())
