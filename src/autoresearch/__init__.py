"""autoresearch: an overnight research loop that owns its own rules.

The agent proposes a change to the editable files; the tool checks it, runs it under a hard
limit, computes the metric itself, keeps or reverts it in git and records everything.
"""

__version__ = "0.1.0"

__all__ = ["Session", "create", "open"]


def __getattr__(name: str):
    """``autoresearch.open``, ``autoresearch.create`` and ``autoresearch.Session``, imported on first use so
    that ``import autoresearch`` stays cheap and has no side effects."""
    if name in __all__:
        from autoresearch import session

        return getattr(session, name)
    raise AttributeError(f"module 'autoresearch' has no attribute {name!r}")
