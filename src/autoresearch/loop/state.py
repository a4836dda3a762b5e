"""Where a tag stands, read from the ledger: the questions the session, the driver, the brief and the
dashboard all ask, answered in one place.

Contract: every answer is derived from the ledger's rows and meta at the moment of asking; nothing is
cached and nothing is written (``LoopState`` never changes the ledger), so a reader in another process
(the dashboard, ``autoresearch status``) gets the same answer as the loop itself.

- ``champion``: the tag's latest kept baseline or experiment (``Ledger.champion``).
- ``base``: the commit the next experiment starts from (the champion plus the agent's notes carried
  forward): recorded in each result's sealed decision as ``base_after`` (``"result"`` for a keep: the row's
  own result commit, which cannot name itself); rows recorded before that field
  existed fall back to ledger meta ``base:<tag>``, then to the champion's commit.
- ``phase``: derived from the finished experiments and ``program.md`` (never stored).
- ``noise``: the noise floor measured for the tag (meta ``noise:<tag>``).
- ``spent`` / ``budget_stop``: the agent's cost and tokens over the whole tag.
- ``pending_notes`` / ``control``: the researcher's notes not yet briefed, and pause/stop requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from autoresearch.config import Config
from autoresearch.loop import decide as decide_mod
from autoresearch.loop.ledger import CHAMPION_KINDS, Experiment, Ledger
from autoresearch.loop.phases import Phase, Program, current_phase, load_program
from autoresearch.vocab import Kind, Status

CONTROLS = ("run", "pause", "stop")
RESULT = "result"        # base_after of a kept experiment: its own result commit (which carries the row's seal)


@dataclass
class LoopState:
    config: Config
    ledger: Ledger
    tag: str

    @cached_property
    def program(self) -> Program:
        return load_program(self.config.root / self.config.task.program)

    def champion(self) -> Experiment | None:
        return self.ledger.champion(self.tag)

    def experiments(self) -> list[Experiment]:
        return self.ledger.rows(tag=self.tag, kinds=(Kind.EXPERIMENT,))

    def finished(self) -> list[Experiment]:
        """This tag's experiments with a final outcome (those that count for phases and budgets)."""
        return [r for r in self.experiments() if _finished(r.status)]

    def phase(self) -> tuple[Phase, int]:
        return current_phase(self.program, [r.status for r in self.finished()])

    def noise(self) -> decide_mod.NoiseFloor | None:
        raw = self.ledger.get_meta(f"noise:{self.tag}")
        return decide_mod.NoiseFloor.from_dict(raw) if raw else None

    def base(self) -> str | None:
        """The commit the next experiment starts from (see the module docstring); None before the baseline."""
        rows = [r for r in self.ledger.rows(tag=self.tag, kinds=CHAMPION_KINDS) if r.decision.get("base_after")]
        if rows:
            latest = max(rows, key=lambda r: (r.ended_at or "", r.number))
            after = latest.decision["base_after"]
            return latest.commit if after == RESULT else after
        champ = self.champion()
        return self.ledger.get_meta(f"base:{self.tag}") or (champ.commit if champ else None)

    def champion_runs(self, champ: Experiment) -> list[list[float]]:
        """Every measurement of the champion's code: its own runs (the first and any extra seeds) and the
        noise-floor runs of the same commit."""
        runs = [champ.folds] + [list(r) for r in (champ.decision.get("numbers", {}).get("confirm_runs") or [])]
        for row in self.ledger.rows(tag=self.tag, kinds=(Kind.NOISE,)):
            if row.commit == champ.commit and row.status == Status.KEEP:
                runs.append(row.folds)
        return runs

    def code_runs(self, *, exclude: int | None = None) -> dict[str, list[list[float]]]:
        """Every code measured more than once under different seeds, label -> its runs: each kept baseline or
        experiment (its runs and the noise runs of its commit) and any other experiment with extra runs. The
        evidence of seed noise is pooled from these (``loop.noise``); ``exclude`` leaves a candidate out."""
        noise_runs: dict[str, list[list[float]]] = {}
        for row in self.ledger.rows(tag=self.tag, kinds=(Kind.NOISE,)):
            if row.status == Status.KEEP and row.commit:
                noise_runs.setdefault(row.commit, []).append(row.folds)
        out = {}
        for row in self.ledger.rows(tag=self.tag, kinds=CHAMPION_KINDS):
            if row.number == exclude or not row.folds or row.metric_mean is None:
                continue
            extra = [list(r) for r in (row.decision.get("numbers", {}).get("confirm_runs") or [])]
            runs = [row.folds, *extra] + (noise_runs.get(row.commit, []) if row.status == Status.KEEP else [])
            if len(runs) > 1:
                out[f"experiment {row.number}" if row.kind == Kind.EXPERIMENT else "the baseline"] = runs
        return out

    def spent(self) -> tuple[float, int]:
        """The agent's cost in USD and tokens so far on this tag (unknown costs count as zero)."""
        rows = self.experiments()
        return (sum(r.cost_usd or 0.0 for r in rows), sum((r.tokens_in or 0) + (r.tokens_out or 0) for r in rows))

    def budget_stop(self, max_cost: float | None, max_tokens: int | None) -> str | None:
        cost, tokens = self.spent()
        if max_cost and cost >= max_cost:
            return f"reached the cost budget: ${cost:.2f} of ${max_cost:.2f}"
        if max_tokens and tokens >= max_tokens:
            return f"reached the token budget: {tokens} of {max_tokens}"
        return None

    def pending_notes(self) -> list[dict]:
        """Researcher notes for this tag (``Session.note``) not yet put in a brief."""
        delivered = {e.payload.get("note") for e in self.ledger.events("note_delivered")}
        return [{"id": e.id, "text": e.payload.get("text", "")} for e in self.ledger.events("note")
                if e.payload.get("tag") == self.tag and e.id not in delivered]

    def control(self) -> str:
        return self.ledger.get_meta(f"control:{self.tag}") or "run"


def _finished(status: str | None) -> bool:
    try:
        return Status(status).finished
    except ValueError:
        return False
