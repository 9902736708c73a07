#!/usr/bin/env bash
# Prints the path of a virtualenv holding the LangGraph server the tests use (Tests/Engines/langgraph/
# requirements.txt), creating it first if needed (scripts/python-venv.sh: cached, a few minutes from PyPI once).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec bash "$ROOT/scripts/python-venv.sh" langgraph "$ROOT/Tests/Engines/langgraph/requirements.txt"
