#!/usr/bin/env bash
# The whole fault suite (`make faults`): every scenario on SQLite and
# PostgreSQL at the sizes of docs/reliability.md, whose table it rewrites
# when every scenario passes. It needs root (it starts sshd hosts and a
# network namespace) and what .ci/services-up.sh sets up (the SSH user and
# its key); it starts its own sshd, PostgreSQL and Redis for each scenario.
# It takes about an hour on two cores. MITO_FAULTS_N overrides the number
# of tasks of a scenario; MITO_FAULTS_RUN picks scenarios (go test -run),
# and then the table is left alone:
#   MITO_FAULTS_RUN='TestFaults/CPU_hog' make faults
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LAB=${LAB:-$ROOT/.ci/tmp}
export LAB
trap 'bash .ci/services-down.sh' EXIT
bash .ci/services-up.sh || exit 1
# shellcheck disable=SC1091
source "$LAB/env"
export MITO_TEST_REQUIRE=1 MITO_FAULTS=full
# Only a run of every scenario rewrites the table.
[ -z "${MITO_FAULTS_RUN:-}" ] && export MITO_FAULTS_DOC="$ROOT/docs/reliability.md"
go test -count=1 -v -timeout 150m -run "${MITO_FAULTS_RUN:-TestFaults}" ./faults/ 2>&1 | tee "$LAB/faults.log" | grep -E '^\s*(--- |ok|FAIL|PASS)|suite_test.go:[0-9]+: .* on (sqlite|postgres):'
exit "${PIPESTATUS[0]}"
