"""The Ray executor on a Ray cluster of three "nodes" on this machine (``ray.cluster_utils.Cluster``): a
head and two workers, each worker with one unit of a custom resource standing in for a GPU.

One cluster for the module (Ray starts slowly on two cores). The first test checks what a worker
receives; the second removes a worker node while experiments run on it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from autoresearch.loop.engine import open_ledger  # noqa: E402
from autoresearch.loop.gitops import Git, archive_ref  # noqa: E402
from autoresearch.runner.ray_executor import RayExecutor, Request  # noqa: E402
from autoresearch.runner.spec import ExitKind, Mount, RunSpec  # noqa: E402
from autoresearch.session import Session  # noqa: E402
from toyrepo import make_toy_repo  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [c.add_node(num_cpus=2, resources={"fakegpu": 1}) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False)
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


LIST = r'''
import json, os, sys
# Every file this worker's scratch folder holds (the run is unsandboxed here, so it sees them all).
driver_cwd = sys.argv[1].replace("%", "/")   # given as %tmp%...: no path, so not re-rooted
cwd = os.getcwd()
scratch = cwd[: len(cwd) - len(driver_cwd)]
files = [os.path.relpath(os.path.join(d, f), scratch) for d, _, fs in os.walk(scratch) for f in fs]
out = os.environ["AUTORESEARCH_OUT"]
json.dump({"files": sorted(files), "node": os.environ.get("AUTORESEARCH_NODE"),
           "train": os.environ["AUTORESEARCH_TRAIN"]}, open(os.path.join(out, "listing.json"), "w"))
print("listed", len(files))
'''


def test_a_worker_gets_code_and_its_data_but_never_keys_or_the_test_split(cluster, tmp_path):
    repo = tmp_path / "repo"
    state = repo / ".autoresearch"
    for rel, text in {"list.py": LIST, ".gitignore": ".autoresearch/\n", "notes.md": "tracked\n",
                      "untracked_secret.txt": "not tracked: stays\n",
                      ".autoresearch/prepared/chunk_0.pt": "train data 0", ".autoresearch/prepared/chunk_1.pt": "data 1",
                      ".autoresearch/prepared/queries/fold_1.pt": "queries of fold 1",
                      ".autoresearch/secret/keys/fold_1.json": "{}", ".autoresearch/secret/queries_test.pt": "test",
                      ".autoresearch/ledger.sqlite": "x"}.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    Git(repo).init()
    Git(repo).commit(["list.py", ".gitignore", "notes.md"], "code\n")
    prepared = state / "prepared"
    spec = RunSpec(name="fold1", command=(sys.executable, "list.py", str(repo).replace("/", "%")), cwd=repo,
                   env={"AUTORESEARCH_OUT": str(state / "runs/0001/fold1"), "AUTORESEARCH_MODE": "fold",
                        "AUTORESEARCH_TRAIN": str(prepared / "chunk_0.pt")},
                   out_dir=state / "runs/0001/fold1", log_path=state / "runs/0001/fold1.log", timeout_s=60,
                   grace_s=1, sandbox=False, readonly=(Mount(prepared / "chunk_0.pt"), Mount(prepared / "queries/fold_1.pt")),
                   hidden=(state,))
    ex = RayExecutor(Request(num_cpus=1, resources=(("fakegpu", 1.0),)))
    [outcome] = ex.run([spec])
    assert outcome.kind == ExitKind.OK, outcome.reason + (state / "runs/0001/fold1.log").read_text()
    listing = json.loads((state / "runs/0001/fold1/listing.json").read_text())   # the outputs came back
    rel = lambda p: str(p.relative_to("/"))  # noqa: E731
    files = set(listing["files"])
    assert {rel(repo / "list.py"), rel(repo / "notes.md"), rel(prepared / "chunk_0.pt"),
            rel(prepared / "queries/fold_1.pt")} <= files
    assert not [f for f in files if "secret" in f or "queries_test" in f or "ledger" in f or "/.git/" in f
                or "chunk_1" in f or "untracked" in f], files
    assert set(outcome.extra["received"]) <= files
    assert listing["train"].endswith(rel(prepared / "chunk_0.pt")) and listing["train"] != str(prepared / "chunk_0.pt")
    assert "listed" in (state / "runs/0001/fold1.log").read_text()
    # The one-time test never goes to a worker.
    from autoresearch.errors import UserError

    with pytest.raises(UserError, match="test split stays on the driver"):
        ex.run([RunSpec(**{**spec.__dict__, "env": {**spec.env, "AUTORESEARCH_MODE": "final"}})])


SLOW_TRAIN = '''\
import math, os, random, sys, time
LR = 0.01  # learning rate
SEED = 0  # random seed
MARKS = {marks!r}
fold = int(os.environ.get("AUTORESEARCH_FOLD") or 0)
open(os.path.join(MARKS, f"{{LR}}-{{fold}}-{{os.getpid()}}-{{os.environ.get('AUTORESEARCH_NODE')}}"), "w").close()
time.sleep(8 if LR == 0.001 else 1.5)
rng = random.Random(int(os.environ.get("AUTORESEARCH_SEED") or 0) * 1000 + fold)
print(f"val_bpb: {{(math.log10(LR) + 3) ** 2 + 1.0 + rng.gauss(0, 0.01):.6f}}")
'''
LRS = [0.005, 0.002, 0.001, 0.0005]
QUEUE = "".join(f'[[experiment]]\ndescription = "LR -> {lr}"\nset = {{ LR = {lr} }}\n\n' for lr in LRS)


def test_a_node_lost_mid_run_is_proposed_again_and_nothing_is_lost(cluster, tmp_path):
    c, workers = cluster
    marks = tmp_path / "marks"
    marks.mkdir()
    root = make_toy_repo(tmp_path / "toy", queue=QUEUE, rule="greedy")
    (root / "train.py").write_text(SLOW_TRAIN.format(marks=str(marks)))
    with open(root / "autoresearch.toml", "a") as fh:
        fh.write('\n[resources]\ncpus = 0.5\ncustom = { fakegpu = 1 }\n')
    Git(root).commit(["train.py", "autoresearch.toml"], "slow toy\n")
    removed: list[str] = []

    def remove_the_node_running_lr_0_001():
        end = time.monotonic() + 240
        while time.monotonic() < end and not removed:
            for name in os.listdir(marks):
                if name.startswith("0.001-"):
                    node_id = name.rsplit("-", 1)[1]
                    victim = next(w for w in workers if w.node_id == node_id)
                    c.remove_node(victim, allow_graceful=False)
                    removed.append(node_id)
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=remove_the_node_running_lr_0_001, daemon=True)
    watcher.start()
    session = Session(root, tag="ray")
    stop = session.run("replay", experiments=len(LRS), parallel=2, executor="ray", no_sandbox=True)
    watcher.join(timeout=1)
    assert removed, "the run of LR 0.001 never started"
    assert stop.why == f"reached {len(LRS)} experiments"

    ledger = open_ledger(session.config)
    rows = ledger.rows(tag="ray", kinds=("experiment",))
    lost = [r for r in rows if r.status == "interrupted"]
    assert lost and all("Ray run was lost" in r.reason for r in lost)
    assert any(r.meta["queue_index"] == 2 for r in lost)
    finished = [r for r in rows if r.status != "interrupted"]
    assert sorted(r.meta["queue_index"] for r in finished) == list(range(len(LRS)))   # none lost, none twice
    assert not ledger.running()
    git = Git(root)
    champ = ledger.champion("ray")
    assert f"LR = {champ.description.split()[-1]}" in git.show(champ.commit, "train.py")
    assert git.head() == session.state.base() and git.status() == []
    for r in finished:
        assert git.rev(archive_ref(r.number)) == r.commit
    # LR 0.001 ran twice: once cut off with the node, once again to a result on the node that was left.
    runs = [n.split("-") for n in os.listdir(marks) if n.startswith("0.001-")]
    survivor = ({w.node_id for w in workers} - set(removed)).pop()
    assert {fold for _, fold, _, node in runs if node == survivor} == {"0", "1"}   # the re-run, both folds
