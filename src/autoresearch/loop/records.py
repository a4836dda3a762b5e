"""Tamper evidence: the ledger's seals (``loop/rows.py``) checked against git, and git told of each seal.

The loop records every attempt twice: a ledger row, and (for an experiment that ran) a result commit whose
message carries the row's seal (``record: sha256:...``). The seals form one chain, and the chain's head is
also written into git as ``refs/autoresearch/records`` (a blob holding the seal). ``verify`` reads both and
names every disagreement:

1. a sealed row whose record no longer gives its seal (a status, metric or reason changed by hand);
2. a break in the chain: a row whose predecessor is missing (a row deleted), two rows claiming the same
   predecessor (a row inserted), or a ledger head that is not the chain's last seal;
3. git's head of the chain that is not on the ledger's chain (rows removed from the end, or rewritten);
4. an experiment whose result commit does not carry its seal, or whose archive ref points elsewhere;
   an archive ref with no row behind it;
5. a finished row without a seal after the first sealed one (a seal stripped).

What a stop of the tool itself can leave (the ledger sealed rows, git's head not moved yet: it lies further
back on the same chain) is finished by ``anchor``, not reported. What this does not stop: someone who rewrites the ledger,
creates matching commits and moves every ref consistently. Without a key out of that person's reach, no
record can; ``docs/threat-model.md`` says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoresearch.loop.gitops import ARCHIVE_PREFIX, Git, archive_ref
from autoresearch.loop.ledger import CHAIN_HEAD, Ledger
from autoresearch.loop.rows import seal
from autoresearch.vocab import Kind, Status

RECORDS_REF = "refs/autoresearch/records"
ACCEPTED = "accepted_records"       # ledger meta: what a person accepted (``accept``)
_SEAL_LINE = re.compile(r"^record: (sha256:[0-9a-f]{64})$", re.MULTILINE)


def seal_line(digest: str) -> str:
    """The line a result commit's message carries."""
    return f"record: {digest}"


def anchored(git: Git) -> str:
    """The chain head git holds ('' when none)."""
    sha = git.rev_object(RECORDS_REF)
    return git("cat-file", "blob", sha).strip() if sha else ""


def anchor(git: Git, digest: str) -> None:
    """Tell git the chain's new head (after the ledger sealed it)."""
    blob = git("hash-object", "-w", "--stdin", input=digest + "\n").strip()
    git.update_ref(RECORDS_REF, blob)


@dataclass(frozen=True)
class Problem:
    number: int | None
    what: str

    def __str__(self) -> str:
        return f"experiment {self.number}: {self.what}" if self.number is not None else self.what


def verify(ledger: Ledger, git: Git, *, repair: bool = True) -> list[Problem]:
    """Every disagreement between the ledger's rows, their seals and git (see the module docstring). With
    ``repair``, what a stop of the tool leaves unfinished (git's head behind on the chain; a sealed
    experiment's archive ref not yet set) is finished instead of reported."""
    rows = ledger.stored_rows()
    head = ledger.get_meta(CHAIN_HEAD) or ""
    problems, by_seal = check_seals(rows, head)
    return problems + _check_git(ledger, git, rows, by_seal, head, repair)


def check_seals(rows: list[dict], head: str) -> tuple[list[Problem], dict[str, dict]]:
    """The ledger alone (no git): each seal against its record, and the chain (items 1, 2 and 5 of the
    module docstring). Cheap: the loop runs it after every agent turn that ran inside the tool."""
    problems: list[Problem] = []
    by_seal: dict[str, dict] = {}
    successor: dict[str, int] = {}
    first_sealed = min((r["number"] for r in rows if r["digest"]), default=None)
    for r in rows:
        n, digest = r["number"], r["digest"]
        if digest is None:
            finished = r["status"] not in (None, Status.RUNNING)
            if finished and first_sealed is not None and n > first_sealed:
                problems.append(Problem(n, "finished but not sealed: its seal was removed"))
            continue
        prev = r["chain_prev"] or ""
        if seal(r, prev) != digest:
            problems.append(Problem(n, "its record was changed after it was sealed (status, metric or reason "
                                       "no longer match its seal)"))
        if digest in by_seal:
            problems.append(Problem(n, f"has the same seal as experiment {by_seal[digest]['number']}"))
        by_seal[digest] = r
        if prev in successor:
            problems.append(Problem(n, f"claims the same predecessor as experiment {successor[prev]}: a row was "
                                       "inserted into the chain"))
        successor[prev] = n
    for digest, r in by_seal.items():
        prev = r["chain_prev"] or ""
        if prev and prev not in by_seal:
            problems.append(Problem(r["number"], "the row sealed before it is missing: a row was deleted"))
    if by_seal:
        ends = [d for d in by_seal if d not in successor]
        if head not in by_seal or ends != [head]:
            problems.append(Problem(None, f"the ledger's chain head ({head[:19] or 'none'}) is not the last sealed row"))
    return problems, by_seal


def _on_chain(digest: str, head: str, by_seal: dict) -> bool:
    """Whether ``digest`` ('' included: nothing anchored yet) lies on the chain that ends at ``head``."""
    seen, current = set(), head
    while current and current not in seen:
        if current == digest:
            return True
        seen.add(current)
        current = by_seal.get(current, {}).get("chain_prev") or ""
    return digest == ""


def _check_git(ledger: Ledger, git: Git, rows: list[dict], by_seal: dict, head: str, repair: bool) -> list[Problem]:
    problems: list[Problem] = []
    held = anchored(git)
    if head and held != head:
        if repair and _on_chain(held, head, by_seal):
            anchor(git, head)      # git is behind (a stop between the two writes, or a writer that only sealed)
        else:
            problems.append(Problem(None, f"git's record of the chain ({RECORDS_REF}: {held[:19] or 'none'}) does "
                                          f"not match the ledger's head ({head[:19]}): rows were removed or rewound"))
    numbers = {r["number"] for r in rows}
    accepted = ledger.get_meta(ACCEPTED) or {}
    results = [r for r in rows if r["digest"] and r["kind"] == Kind.EXPERIMENT and r["commit"]]
    messages = _messages(git, [r["commit"] for r in results])
    for r in results:
        n, commit = r["number"], r["commit"]
        found = _SEAL_LINE.findall(messages.get(commit, ""))
        if found != [r["digest"]] and accepted.get("seals", {}).get(str(n)) != r["digest"]:
            problems.append(Problem(n, f"its result commit {commit[:10]} does not carry its seal"))
        ref = git.rev(archive_ref(n))
        if repair and ref in (None, r["candidate_commit"]):     # the record was sealed, the ref not moved yet
            git.update_ref(archive_ref(n), commit)
        elif ref != commit:
            problems.append(Problem(n, f"{archive_ref(n)} points to {str(ref)[:10]}, but the ledger records "
                                       f"{commit[:10]}"))
    for ref in git("for-each-ref", "--format=%(refname)", ARCHIVE_PREFIX).split():
        tail = ref[len(ARCHIVE_PREFIX):]
        if tail.isdigit() and int(tail) not in numbers and tail not in accepted.get("orphans", []):
            problems.append(Problem(int(tail), f"{ref} exists but the ledger has no such row: a row was deleted"))
    return problems


def _messages(git: Git, commits: list[str]) -> dict[str, str]:
    """Each commit's message, read in one git call (commits that do not exist are left out)."""
    wanted = [c for c in dict.fromkeys(commits) if c and re.fullmatch(r"[0-9a-f]{40}", c)]
    if not wanted:
        return {}
    found = git.run("cat-file", "--batch-check", input="".join(f"{c}\n" for c in wanted)).stdout.splitlines()
    present = [line.split()[0] for line in found if line.endswith(" missing") is False and " commit " in line]
    if not present:
        return {}
    out = git("log", "--no-walk=unsorted", "--format=%H%n%B%x00", *present)
    messages = {}
    for chunk in out.split("\0"):
        chunk = chunk.lstrip("\n")
        if chunk:
            sha, _, body = chunk.partition("\n")
            messages[sha] = body
    return messages


def accept(ledger: Ledger, git: Git) -> list[Problem]:
    """A person accepts the ledger as it is now: every finished row is sealed again, archive refs follow the
    ledger, and what git cannot follow (result commits carrying the old seals, archive refs of rows that are
    gone) is listed as accepted. Returns the problems that were accepted; recorded as an event."""
    problems = verify(ledger, git, repair=False)
    head = ledger.reseal()
    anchor(git, head)
    seals, orphans = {}, []
    numbers = set()
    for r in ledger.stored_rows():
        numbers.add(r["number"])
        if r["kind"] == Kind.EXPERIMENT and r["commit"] and r["digest"] and git.rev(r["commit"]):
            if _SEAL_LINE.findall(git.message(r["commit"])) != [r["digest"]]:
                seals[str(r["number"])] = r["digest"]
            if git.rev(archive_ref(r["number"])) != r["commit"]:
                git.update_ref(archive_ref(r["number"]), r["commit"])
    for ref in git("for-each-ref", "--format=%(refname)", ARCHIVE_PREFIX).split():
        tail = ref[len(ARCHIVE_PREFIX):]
        if tail.isdigit() and int(tail) not in numbers:
            orphans.append(tail)
    ledger.set_meta(ACCEPTED, {"seals": seals, "orphans": orphans})
    ledger.event("records_accepted", problems=[str(p) for p in problems])
    return problems
