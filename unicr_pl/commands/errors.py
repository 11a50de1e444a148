"""The error boundary every command shares: expected failures become one line and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable


def guarded(prog: str, work: Callable[[], object]) -> int:
    """Runs `work()`; bad input (ValueError) and the OS's refusals (disk full, permission denied,
    missing file: OSError) become `<prog>: error: <what> (<file>)` on stderr and exit code 2.
    Anything else is a bug and keeps its traceback."""
    try:
        work()
    except ValueError as err:
        message = str(err)
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        message = f"{err.strerror or err}{where}"
    else:
        return 0
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
