"""Suite-wide set-up."""

from __future__ import annotations

import signal


def pytest_configure(config) -> None:
    """Ctrl-C behaves as in a terminal, however the suite was started. A shell starting a command in the
    background (``cmd &``) without job control makes it ignore SIGINT, and children inherit that; the
    tests that press Ctrl-C on the tool (on this process, or on a child it starts) need the default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
