"""The statuses the loop treats specially, named from the one vocabulary (``autoresearch.vocab.Status``).

``contention``: a fold was cut off at the deadline while other work held the machine's cores and the run
got much less CPU than it asked for (see ``runner/load.py``). It is not the candidate's verdict: the
engine runs the same candidate again, charges no phase budget and no crash-fix attempt.

``aborted``: a fold was stopped early by the abort rule (NaN/inf loss, or a loss far worse than the
champion's at the same step for long enough; see ``docs/early-abort.md``). It is a verdict, charged like
a discard; the later folds are not run.
"""

from __future__ import annotations

from autoresearch.vocab import Status

CONTENTION = Status.CONTENTION
ABORTED = Status.ABORTED
NEW_STATUSES = (CONTENTION, ABORTED)

# Finished rows with these statuses are not experiments the search spent: phases, budgets and the
# replay agent's position ignore them, and the candidate is proposed (or run) again.
NOT_CHARGED = tuple(s for s in Status if not s.finished)
