#!/usr/bin/env bash
# Prints the path of a virtualenv holding the independent OpenAPI validators the contract tests use
# (Tests/OpenAPI/requirements.txt), creating it first if needed (scripts/python-venv.sh: cached).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
exec bash "$ROOT/scripts/python-venv.sh" openapi "$ROOT/Tests/OpenAPI/requirements.txt"
