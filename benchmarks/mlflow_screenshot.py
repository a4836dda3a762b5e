"""docs/mlflow-night.png: a night exported with `autoresearch export mlflow`, in MLflow's own UI.

MLflow's UI is not in the `mlflow` extra (that is mlflow-skinny, the client); install the full package in an
environment of its own and point this at its `mlflow` command:

    python3 -m venv /tmp/mlflow-ui && /tmp/mlflow-ui/bin/pip install mlflow==3.18.0
    autoresearch export mlflow -C REPO --tag TAG --tracking-uri sqlite:////tmp/night.db --experiment "toy night n"
    .venv/bin/python benchmarks/mlflow_screenshot.py --mlflow /tmp/mlflow-ui/bin/mlflow \
        --store sqlite:////tmp/night.db --out docs/mlflow-night.png

The server listens on loopback only, with one worker, and is stopped (its whole process group) at the end.
The page is driven with Playwright and Debian's chromium, as tests/test_dashboard_browser.py does.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
import urllib.request

from playwright.sync_api import sync_playwright

COLUMNS = ["Dataset", "Source", "Models", "val_bpb", "val_bpb_std", "delta", "LR", "WIDTH", "autoresearch.kind",
           "autoresearch.status", "autoresearch.commit"]   # the first three are shown by default: hidden


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mlflow", required=True, help="the `mlflow` command of a full MLflow install")
    ap.add_argument("--store", required=True, help="the tracking store the night was exported to")
    ap.add_argument("--out", default="docs/mlflow-night.png")
    ap.add_argument("--port", type=int, default=5077)
    ap.add_argument("--experiment", default="1", help="the MLflow experiment id")
    args = ap.parse_args()
    server = subprocess.Popen([args.mlflow, "ui", "--backend-store-uri", args.store, "--host", "127.0.0.1",
                               "--port", str(args.port), "--workers", "1"], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{args.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the MLflow UI did not start")
                time.sleep(1)
        shoot(f"{base}/#/experiments/{args.experiment}/runs?orderByKey=attributes.start_time&orderByAsc=true",
              args.out)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def shoot(url: str, out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1700, "height": 960})
        page.goto(url)
        time.sleep(8)
        page.get_by_role("button", name="Columns").click()
        search = page.get_by_placeholder("Search columns")
        for name in COLUMNS:
            search.fill(name)
            time.sleep(0.8)
            nodes = page.locator("[data-testid=column-selector-tree] [class*=treenode]")
            hit = [nodes.nth(i) for i in range(nodes.count()) if nodes.nth(i).inner_text().strip() == name]
            if hit:
                hit[0].locator("[class*=tree-checkbox]").first.click()
        page.keyboard.press("Escape")
        time.sleep(2)
        title = page.get_by_text("MLflow Assistant")      # a side panel that opens on its own: closed
        if title.count() and title.first.is_visible():
            top = title.first.bounding_box()["y"]
            buttons = page.locator("button:visible")
            right = [buttons.nth(i) for i in range(buttons.count())
                     if (bb := buttons.nth(i).bounding_box()) and abs(bb["y"] - top) < 20]
            right[-1].click()
            time.sleep(2)
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main()
