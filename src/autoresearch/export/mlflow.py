"""``autoresearch export mlflow``: every finished ledger row of a tag as an MLflow run.

One MLflow experiment per tag (named for the tag unless ``--experiment`` says otherwise), one run per
ledger row (the baseline, experiments, noise-floor and final rows, ablation and transfer runs),
with its start and end times from the ledger:

- parameters: the constants the row's code changed against its parent (``LR = 0.001``);
- metrics: the metric's mean over folds and its std, each fold's value (``fold0/<metric>``) and every other
  number the scorer gave per fold, the delta, training seconds, peak memory, tokens and cost;
- tags: ``autoresearch.number`` (the ledger number), kind, status, phase, commit, parent commit, decision
  (the recorded reason), description and hypothesis; the run's name is "<number> <description>";
- artifacts: ``diff.patch`` (the commit against its parent), ``logs/<run>.log`` (each run's log, its last MiB)
  and ``decision.json`` (the decision's numbers).

Running it again adds only what is new: a run is complete once its tag ``autoresearch.export`` says so (set
last); rows with a complete run are skipped, and a run an interrupted export left incomplete is deleted and
written again. An MLflow experiment records the repository it mirrors (``autoresearch.root``), so a second
repository's night with the same tag is refused rather than mixed in. Rows still running are left for the
next export. MLflow is an optional extra: ``pip install 'autoresearch[mlflow]'``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from autoresearch.errors import UserError
from autoresearch.hyperparams import MISSING, diff_constants, render_value
from autoresearch.loop.gitops import Git
from autoresearch.loop.ledger import Experiment
from autoresearch.scoring.safeio import UnsafeOutput, read_tail
from autoresearch.vocab import Status

NUMBER = "autoresearch.number"
DONE = "autoresearch.export"
LOG_BYTES = 1 << 20
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")

_STATUS = {Status.KEEP: "FINISHED", Status.DISCARD: "FINISHED", Status.STALE: "FINISHED",
           Status.INTERRUPTED: "KILLED", Status.CONTENTION: "KILLED"}


@dataclass(frozen=True)
class Exported:
    uri: str
    experiment: str
    experiment_id: str
    added: int
    skipped: int


def export(session: Any, *, tracking_uri: str | None = None, experiment: str | None = None,
           say: Callable[[str], None] | None = None) -> Exported:
    """Write ``session``'s tag to MLflow; only rows without a complete run there are written."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError("the MLflow export needs the mlflow package",
                        hint="pip install 'autoresearch[mlflow]'") from None
    for name in ("alembic", "mlflow.store.db.utils"):     # the store's schema set-up is not news
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow.exceptions import MlflowException

    name = experiment or session.tag
    try:
        client = MlflowClient(tracking_uri)
        exp_id = _experiment(client, name, str(session.root), session.tag)
    except MlflowException as exc:
        raise UserError(f"MLflow refused the tracking store {tracking_uri or '(its default)'}: {exc.message}",
                        hint="give --tracking-uri a store it accepts, e.g. sqlite:///mlflow.db or http://host:5000") from None
    uri = getattr(client, "tracking_uri", None) or tracking_uri or ""
    have = _runs(client, exp_id)
    added = skipped = 0
    rows = [r for r in session.ledger.rows(tag=session.tag) if r.status != Status.RUNNING]
    git = Git(session.root)
    for row in rows:
        found = have.get(row.number)
        if found is not None and found[1]:
            skipped += 1
            continue
        if found is not None:
            client.delete_run(found[0])
        _write(client, exp_id, session, git, row)
        added += 1
        if say is not None and added % 25 == 0:
            say(f"{added} runs written")
    return Exported(uri=str(uri), experiment=name, experiment_id=exp_id, added=added, skipped=skipped)


def _experiment(client, name: str, root: str, tag: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        # a model-training experiment, so that MLflow's UI opens on its runs rather than on tracing
        return client.create_experiment(name, tags={"autoresearch.root": root, "autoresearch.tag": tag,
                                                    "mlflow.experimentKind": "custom_model_development"})
    if found.lifecycle_stage != "active":
        raise UserError(f"the MLflow experiment {name!r} is deleted",
                        hint="restore it in MLflow, or pass --experiment with another name")
    other = found.tags.get("autoresearch.root")
    if other is not None and other != root:
        raise UserError(f"the MLflow experiment {name!r} mirrors another repository ({other})",
                        hint="pass --experiment with a name of its own for this one")
    return found.experiment_id


def _runs(client, exp_id: str) -> dict[int, tuple[str, bool]]:
    """Ledger number -> (run id, complete) of the runs already in the experiment."""
    out: dict[int, tuple[str, bool]] = {}
    token = None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        for run in page:
            number = run.data.tags.get(NUMBER)
            if number is not None and number.isdigit():
                complete = run.data.tags.get(DONE) == "complete"
                if int(number) not in out or complete:
                    out[int(number)] = (run.info.run_id, complete)
        token = page.token
        if not token:
            return out


def _write(client, exp_id: str, session: Any, git: Git, row: Experiment) -> None:
    from mlflow.entities import Metric, Param, RunTag

    metric = session.config.metric.name
    start, end = _ms(row.started_at), _ms(row.ended_at)
    title = " ".join((row.description or row.kind or "").split())
    run = client.create_run(exp_id, start_time=start, run_name=f"{row.number} {title}"[:250],
                            tags={NUMBER: str(row.number), DONE: "partial"})
    run_id = run.info.run_id
    stamp = end or start or 0
    metrics = [Metric(_key(k), float(v), stamp, 0) for k, v in _metrics(row, metric).items()]
    params = [Param(_key(k), v[:6000]) for k, v in _params(git, row, session.config.task.editable).items()]
    tags = [RunTag(k, v[:5000]) for k, v in _tags(row).items()]
    for i in range(0, max(len(metrics), len(params), len(tags)), 100):   # MLflow's batch limits
        client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100], tags=tags[i:i + 100])
    commit = row.commit or row.candidate_commit
    if commit and row.parent_commit:
        try:
            client.log_text(run_id, git.diff(row.parent_commit, commit), "diff.patch")
        except Exception:   # noqa: BLE001 - a pruned commit leaves the run without its diff, not the export broken
            pass
    for label, path in session.run_logs(row.number):
        try:
            text = read_tail(path, LOG_BYTES).decode("utf-8", errors="replace")
        except (OSError, UnsafeOutput):
            continue
        client.log_text(run_id, text, f"logs/{label}.log")
    if row.decision:
        client.log_text(run_id, json.dumps(row.decision, indent=1, sort_keys=True), "decision.json")
    client.set_tag(run_id, DONE, "complete")
    client.set_terminated(run_id, status=_STATUS.get(row.status, "FAILED"), end_time=end)


def _metrics(row: Experiment, metric: str) -> dict[str, float]:
    out: dict[str, float] = {}
    put = lambda key, value: out.__setitem__(key, float(value)) if _finite(value) else None  # noqa: E731
    put(metric, row.metric_mean)
    put(f"{metric}_std", row.metric_std)
    put("delta", row.delta)
    put("train_seconds", row.train_seconds)
    put("agent_seconds", row.agent_seconds)
    put("peak_memory_gb", row.peak_memory_gb)
    put("cost_usd", row.cost_usd)
    if row.tokens_in or row.tokens_out:
        put("tokens", (row.tokens_in or 0) + (row.tokens_out or 0))
    for k, value in enumerate(row.folds):
        put(f"fold{k}/{metric}", value)
    per_fold = row.metrics if isinstance(row.metrics, list) else []
    for k, m in enumerate(per_fold):
        if isinstance(m, dict):
            for name, value in m.items():
                if name != metric:
                    put(f"fold{k}/{name}", value)
    return out


def _params(git: Git, row: Experiment, editable) -> dict[str, str]:
    """The constants the row's code changed against its parent, as text."""
    commit = row.commit or row.candidate_commit
    if not commit or not row.parent_commit or commit == row.parent_commit:
        return {}
    out = {}
    for rel in editable:
        if not rel.endswith(".py"):
            continue
        old, new = git.show(row.parent_commit, rel), git.show(commit, rel)
        if old is None or new is None or old == new:
            continue
        try:
            for name, _, value in diff_constants(old, new):
                out[name] = "(removed)" if value is MISSING else render_value(value)
        except (SyntaxError, ValueError):
            continue
    return out


def _tags(row: Experiment) -> dict[str, str]:
    tags = {"autoresearch.kind": row.kind, "autoresearch.status": row.status, "autoresearch.tag": row.tag,
            "autoresearch.phase": f"{row.phase}: {row.phase_title}" if row.phase is not None else row.phase_title,
            "autoresearch.commit": row.commit, "autoresearch.parent_commit": row.parent_commit,
            "autoresearch.candidate_commit": row.candidate_commit, "autoresearch.decision": row.reason,
            "autoresearch.changed": row.changed, "autoresearch.description": row.description,
            "autoresearch.hypothesis": row.hypothesis, "autoresearch.agent": row.agent,
            "autoresearch.attempt": str(row.attempt) if row.attempt else None,
            "autoresearch.sandboxed": None if row.sandbox is None else str(bool(row.sandbox)).lower(),
            "mlflow.note.content": "\n\n".join(x for x in (row.description, row.hypothesis and f"Hypothesis: {row.hypothesis}",
                                                          row.reason and f"Decision: {row.reason}") if x)}
    return {k: str(v) for k, v in tags.items() if v not in (None, "")}


def _key(name: str) -> str:
    """An MLflow-safe key (letters, digits, ``_-. /``)."""
    return _KEY.sub("_", name)[:250]


def _ms(stamp: str | None) -> int | None:
    if not stamp:
        return None
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
