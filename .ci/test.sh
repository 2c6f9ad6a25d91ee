#!/usr/bin/env bash
# Run every check and test against real services: what `make test` and CI run.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LAB=${LAB:-$ROOT/.ci/tmp}
export LAB
trap 'bash .ci/services-down.sh' EXIT
bash .ci/services-up.sh || exit 1
# shellcheck disable=SC1091
source "$LAB/env"
export MITO_TEST_REQUIRE=1   # a test that cannot find its service fails instead of skipping

rc=0
echo "[test] gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change: $bad"; rc=1; fi
echo "[test] go vet"
go vet ./... || rc=1
echo "[test] go test -race"
go test -race -count=1 -timeout 12m ./... || rc=1
exit $rc
