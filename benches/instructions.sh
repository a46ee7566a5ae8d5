#!/usr/bin/env bash
# The deterministic gate for CI: instructions per operation under valgrind (callgrind),
# against benches/budgets.toml [instructions]. Installs valgrind when it is missing (CI runs
# as root on Debian). Usage: bash benches/instructions.sh [filter]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1; then
  echo "instructions.sh: installing valgrind"
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
exec cargo bench -p knhk-benches --bench instruction_budget -- "$@"
