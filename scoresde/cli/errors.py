"""The command line's user error."""
from __future__ import annotations


class _Fail(Exception):
    """A user error: printed as one line, exit status 2."""
