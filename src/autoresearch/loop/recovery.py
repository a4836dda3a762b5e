"""Start-up: finish or undo whatever a stop of the tool left, from the records, before anything runs.

The loop writes in an order that makes this possible without guessing (see ``loop/lifecycle.py``): git
objects first (candidate, result and notes commits, made without moving any ref), then the ledger (the
row sealed, with the commit the next experiment starts from as ``base_after`` in its decision), then git's
refs (the archive ref, the branch, the chain's anchor). So at start-up:

- a row still ``running`` was cut off: it becomes ``interrupted`` (sealed), its candidate commit keeps an
  archive ref, and the agent proposes again;
- a sealed row whose refs did not move yet gets them (``records.verify`` with repair; the branch is
  fast-forwarded to the recorded base);
- anything else that disagrees (a row changed or deleted by hand, an archive ref moved, a commit on the
  loop's branch that the loop did not make) stops the start with a message that names it;
- the working copies and snapshots of the stopped run are removed, the repository's own tree is reset to
  the base, and the fixed files' fingerprints are checked.

Contract: ``recover(loop)`` is idempotent; it raises ``UserError`` for what only a person can decide.
"""

from __future__ import annotations

from autoresearch import events as ev
from autoresearch import tasks
from autoresearch.errors import UserError
from autoresearch.loop import fingerprints, records, workspace
from autoresearch.loop.context import Loop
from autoresearch.loop.gitops import archive_ref, branch_name
from autoresearch.loop.rows import utc_now
from autoresearch.vocab import Kind, Status

DEFAULT_PROGRAM = """\
# Research program

Improve the metric named in autoresearch.toml by changing the editable files. One idea per experiment;
say what you changed and why in the description. Keep notes in the scratchpad: what worked, what did not,
and what to try next.

## Phase 1: Research
Budget: 20 experiments. Advance after 8 experiments without improvement.

Start with the settings that matter most (learning rate, schedule, batch size, model size), then try
changes to the code.
"""
DEFAULT_SCRATCHPAD = "# Scratchpad\n\nThe agent's notes between experiments.\n"


def recover(loop: Loop) -> None:
    git, cfg = loop.git, loop.config
    if not git.is_repo():
        raise UserError(f"{cfg.root} is not a git repository", hint="run `git init` and commit your files first")
    _check_required_files(loop)
    branch = branch_name(loop.tag)
    git.remove_stale_locks()
    _keep_user_work(loop, branch)
    problems = records.verify(loop.ledger, git)
    if problems:
        listed = "\n  ".join(str(p) for p in problems[:12])
        more = f"\n  ... and {len(problems) - 12} more" if len(problems) > 12 else ""
        raise UserError(f"the ledger and git disagree; what the tool recorded was changed outside it:\n  {listed}{more}",
                        hint="restore .autoresearch/ledger.sqlite (and the repository's refs) from a backup; "
                             "`autoresearch verify` lists the problems, and `autoresearch verify --accept` seals "
                             "the ledger as it is now if a person made these changes on purpose")
    for row in loop.ledger.running():
        loop.finish(row.number, Status.INTERRUPTED, reason="the tool stopped while this ran; it will be proposed again")
        loop.reporter(ev.Interrupted(row.number))
        if loop.agent is not None and row.tag == loop.tag:
            loop.agent.observe(row.number, Status.INTERRUPTED, None, row.meta)
    for row in loop.ledger.rows(kinds=(Kind.EXPERIMENT,)):    # every attempt keeps its candidate in git, also
        if row.status == Status.INTERRUPTED and row.candidate_commit and not row.commit \
                and git.rev(archive_ref(row.number)) is None and git.rev(row.candidate_commit):   # after a second stop
            git.update_ref(archive_ref(row.number), row.candidate_commit)
    if git.rev(f"refs/heads/{branch}") is None:
        git.checkout_branch(branch)
    elif git.current_branch() != branch:
        git("checkout", "-q", branch)
    _add_default_files(loop)
    base = loop.state.base() if loop.state.champion() else None
    if base:
        if git.head() != base:
            git.update_ref(f"refs/heads/{branch}", base)
        git.reset_hard(base)
    for folder in (cfg.state_dir / workspace.SNAPSHOTS, cfg.state_dir / "worktrees", workspace.work_root(cfg.root)):
        workspace.remove(folder)
    git("worktree", "prune")
    loop.fingerprints = fingerprints.verify(cfg)
    tasks.for_config(cfg).check(cfg)


def _check_required_files(loop: Loop) -> None:
    """The files the loop cannot run without, checked before anything is recorded."""
    cfg = loop.config
    for rel in cfg.task.editable:
        if rel != cfg.task.scratchpad and not (cfg.root / rel).is_file() and loop.git.show("HEAD", rel) is None:
            raise UserError(f"{cfg.path}: [task] editable names {rel}, which does not exist",
                            hint=f"create and commit {rel}, or fix [task] editable")


def _keep_user_work(loop: Loop, branch: str) -> None:
    """Never throw a person's work away. The loop resets the tree to the base at start-up, so: uncommitted
    edits of the editable files on the loop's branch are saved with `git stash`; any other uncommitted
    change stops the run with a message; and a commit on the branch that the loop did not record (one that
    is not on the way to the recorded base) stops it too."""
    git, cfg = loop.git, loop.config
    pad = cfg.task.scratchpad
    changes = [c for c in git.status() if not (c.code == "??" and c.path in (pad, cfg.task.program))]
    on_branch = git.current_branch() == branch
    editable = set(cfg.task.editable) | {pad}
    if changes and on_branch and all(c.code != "??" and c.path in editable and not c.orig for c in changes):
        git("stash", "push", "-q", "-m", f"autoresearch: uncommitted edits found at start-up ({utc_now()})")
        loop.reporter(ev.Notice("uncommitted edits of the editable files were saved with `git stash` "
                                "(`git stash list` shows them) before the loop reset the tree"))
    elif changes:
        names = ", ".join(c.path for c in changes[:5]) + (" …" if len(changes) > 5 else "")
        raise UserError(f"the working tree has uncommitted changes: {names}",
                        hint="commit them (`git commit -am ...`) or stash them (`git stash`) first: the loop "
                             "resets the tree to the champion when it starts, and would otherwise lose them")
    head = git.rev(f"refs/heads/{branch}")
    base = loop.state.base() if loop.state.champion() else None
    if head is None or base is None or head == base or git.is_ancestor(head, base):
        return     # nothing recorded yet, in step, or a recorded base the branch has not reached yet
    subject = git("log", "-1", "--format=%s", head).strip()
    raise UserError(f"branch {branch} has a commit the loop did not make: {head[:10]} {subject!r}",
                    hint=f"move it to a branch of its own (`git branch my-work {head[:10]}`) and put the loop's "
                         f"branch back (`git update-ref refs/heads/{branch} {base[:10]}`), or start a new tag "
                         "with --tag")


def _add_default_files(loop: Loop) -> None:
    """The scratchpad and program.md are optional for the user: a repository with nothing but an
    autoresearch.toml gets the defaults (or the user's untracked files), committed on the loop's branch."""
    cfg, git = loop.config, loop.git
    if loop.state.champion() is not None:
        return      # recorded experiments started from a commit that has them; the branch must not move
    added = []
    for rel, default in ((cfg.task.scratchpad, DEFAULT_SCRATCHPAD), (cfg.task.program, DEFAULT_PROGRAM)):
        if git.show("HEAD", rel) is not None:
            continue
        path = cfg.root / rel
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(default, encoding="utf-8")
        added.append(rel)
    if not added:
        return
    git.commit(added, f"autoresearch: add {' and '.join(added)}\n")
    recorded = fingerprints.recorded(cfg)
    if recorded is not None and cfg.task.program in added and cfg.task.program not in recorded:
        fingerprints.record(cfg)        # the program the tool just wrote is the fingerprinted one
    loop.reporter(ev.Notice(f"added {', '.join(added)} (the defaults; edit and commit them to steer the loop)"))
