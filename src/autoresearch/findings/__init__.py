"""What the night found, proven after the search: each kept change ablated at the champion, the gain moved to
settings the loop did not tune on, a reviewable branch with one commit per kept change and a summary.

One module per idea:

- ``changes``: the kept changes, read from the ledger and the champion's history (each keep's diff);
- ``variants``: commits built with git plumbing (a kept change reverted from the champion, the others replayed
  on the baseline, constants overridden);
- ``measure``: the one function that runs a commit under some seeds and records each run as a ledger row;
- ``stats``: paired differences, their standard error and interval, and the verdict on them;
- ``ablate`` and ``transfer``: the two studies, and their tables derived from the ledger;
- ``finalize`` and ``summary``: the branch ``autoresearch/<tag>-final`` and ``summary.md``.

Nothing here decides what the loop keeps; these are read-outs of the night (docs/findings.md).
"""
