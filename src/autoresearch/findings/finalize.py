"""``autoresearch finalize``: the night as a branch a person can review and merge.

``autoresearch/<tag>-final`` starts at the baseline commit and has one commit per kept change, in the order
of keeping. Commit i's tree is the tree of kept experiment i's result commit, so fix attempts (a crash fixed
on a later attempt is inside the kept commit) and the loop's notes-only commits are folded in, with one
exception: **the scratchpad stays as it was at the baseline**. It is the agent's memory, not the research
result; its last version is quoted in ``summary.md`` ("Lessons in the scratchpad"). Applying the branch's
commits to the baseline therefore gives the champion's tree exactly, the scratchpad aside (a test holds it).

Each message carries the change's evidence from the ledger: the metric before and after, the gain with one
standard deviation of the difference and the bar it had to clear, the confirmation runs, the ablation's
verdict when the champion has been ablated, what it changed, the crashed attempts folded in, and where the
original experiment lives (``refs/autoresearch/archive/<n>``). Author and committer dates are the time the
change was kept, so building the branch again from the same records gives the same commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from autoresearch.errors import UserError
from autoresearch.findings.ablate import Ablation
from autoresearch.findings.changes import History, KeptChange
from autoresearch.findings.variants import blob, commit_tree, overlay, tree_of
from autoresearch.loop.gitops import BRANCH_PREFIX, Git, archive_ref


def branch_for(tag: str) -> str:
    return f"{BRANCH_PREFIX}{tag}-final"


@dataclass
class Final:
    branch: str
    head: str
    base: str                                         # the baseline commit it starts from
    commits: list[tuple[str, KeptChange]] = field(default_factory=list)
    replaced: str | None = None                       # the branch's previous head, when it was rebuilt
    left_out: list[str] = field(default_factory=list)   # paths kept as at the baseline (the scratchpad)


def build(git: Git, hist: History, *, tag: str, metric: str, ablation: Ablation | None) -> Final:
    """Write ``autoresearch/<tag>-final`` (replacing an earlier one); returns what it holds."""
    branch = branch_for(tag)
    if git.current_branch() == branch:
        raise UserError(f"{branch} is checked out; finalize rewrites it",
                        hint=f"check out another branch first (`git checkout {BRANCH_PREFIX}{tag}`)")
    pad = hist.scratchpad
    base_pad = blob(git, hist.baseline.commit, pad)
    contributions = {line.change.number: line for line in ablation.lines} if ablation else {}
    out = Final(branch=branch, head=hist.baseline.commit, base=hist.baseline.commit, left_out=[pad])
    parent = hist.baseline.commit
    for change in hist.changes:
        tree = tree_of(git, overlay(git, change.commit, {pad: base_pad}, "finalize: the change's tree\n"))
        message = message_for(change, metric=metric, line=contributions.get(change.number), ablation=ablation)
        parent = commit_tree(git, tree, [parent], message, date=_git_date(change.kept_at))
        out.commits.append((parent, change))
    out.head = parent
    out.replaced = git.rev(f"refs/heads/{branch}")
    if out.replaced == out.head:
        out.replaced = None
    git.update_ref(f"refs/heads/{branch}", out.head)
    return out


def _git_date(stamp: str | None) -> str | None:
    """The ledger's ISO time as git's ``@<epoch> +0000``."""
    if not stamp:
        return None
    try:
        return f"@{int(datetime.fromisoformat(stamp.replace('Z', '+00:00')).timestamp())} +0000"
    except ValueError:
        return None


def message_for(change: KeptChange, *, metric: str, line=None, ablation: Ablation | None = None) -> str:
    """The commit message of one kept change: its description, then its evidence, one fact a line."""
    title = (change.description.splitlines() or ["(no description)"])[0].strip() or "(no description)"
    lines = [title, ""]
    at = f"Kept in experiment {change.number}" + (f" ({change.phase_title})" if change.phase_title else "")
    if change.mean is not None and change.prev is not None:
        at += f": {metric} {change.prev:.4f} -> {change.mean:.4f}"
    if change.gain is not None:
        at += f", gain {change.gain:+.4f}"
        if change.sd is not None:
            at += f" ± {change.sd:.4f} (one standard deviation of the difference)"
        if change.threshold is not None:
            at += f"; the bar was {change.threshold:.4f}"
    lines.append(at)
    if change.reason:
        lines.append(f"Decision: {' '.join(change.reason.split())}")
    if change.confirm_runs:
        means = ", ".join(f"{sum(r) / len(r):.4f}" for r in change.confirm_runs if r)
        lines.append(f"Confirmation runs: {len(change.confirm_runs)} (means {means})")
    else:
        lines.append("Confirmation runs: none (beyond the bar on its first run)")
    if line is not None and ablation is not None:
        contribution = line.contribution.text() if line.contribution else "not measured"
        lines.append(f"Ablation at champion {ablation.champion} ({len(ablation.seeds)} fresh seeds, paired): "
                     f"contribution {contribution}: {line.verdict}")
    elif ablation is None:
        lines.append("Ablation: not run (`autoresearch ablate`)")
    if change.changed:
        lines.append(f"Changed: {change.changed}")
    if change.hypothesis:
        lines.append(f"Hypothesis: {' '.join(change.hypothesis.split())}")
    if change.fixes:
        lines.append(f"Folded in: crashed attempt(s) {', '.join(map(str, change.fixes))} of the same candidate, "
                     "fixed by this change")
    lines.append(f"Experiment: {change.number} ({archive_ref(change.number)}, result commit {change.commit[:12]})")
    return "\n".join(lines) + "\n"
