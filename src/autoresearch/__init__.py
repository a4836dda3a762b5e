"""autoresearch: an overnight research loop that owns its own rules.

The agent proposes a change to the editable files; the tool checks it, runs it under a hard
limit, computes the metric itself, keeps or reverts it in git and records everything.
"""

__version__ = "0.1.0"
