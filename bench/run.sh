#!/usr/bin/env bash
# End-to-end benchmark: no-op tasks per second and submit-to-start latency
# through a coordinator and local shims, on SQLite and on PostgreSQL, for a
# few host×slot configurations. Prints one markdown table, headed by the
# machine, for docs/benchmarks.md. `make bench` runs it after `make build`.
#
# PostgreSQL: MITO_TEST_PG_URL if set; otherwise a private cluster started
# with .ci/services-up.sh (on port MITO_BENCH_PGPORT, default 5434, and its
# own LAB directory, so that it never touches the cluster of a `make test`
# running at the same time) and stopped at the end. With neither, only
# SQLite runs.
#
# Environment: TASKS (default 2000) and SAMPLES (default 200) scale the runs;
# STATS=1 writes each run's store calls per task to stderr.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TASKS=${TASKS:-2000}
SAMPLES=${SAMPLES:-200}
SHIM=$ROOT/bin/mito-shim
[ -x "$SHIM" ] || { echo "bench: $SHIM is missing; run make build (or make bench)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mito-bench-run.XXXXXX")
PGPORT=${MITO_BENCH_PGPORT:-5434}
started_pg=""
cleanup() {
  if [ -n "$started_pg" ]; then
    MITO_CI_PGPORT=$PGPORT bash .ci/services-down.sh
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# Built once, so that no run pays for compilation.
go build -o "$TMP/bench" ./bench

stores="sqlite"
if [ -n "${MITO_TEST_PG_URL:-}" ]; then
  stores="sqlite postgres"
elif [ -x .ci/services-up.sh ] || [ -f .ci/services-up.sh ]; then
  echo "[bench] MITO_TEST_PG_URL unset: starting PostgreSQL on port $PGPORT" >&2
  if LAB=$TMP/lab MITO_CI_PGPORT=$PGPORT bash .ci/services-up.sh >&2; then
    started_pg=1
    # shellcheck disable=SC1091
    source "$TMP/lab/env"
    stores="sqlite postgres"
  else
    echo "[bench] could not start PostgreSQL; benchmarking SQLite only" >&2
  fi
fi

# --- the machine ------------------------------------------------------------
model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1)
mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo 2>/dev/null)
tmpfs=$(df -T "${TMPDIR:-/tmp}" 2>/dev/null | awk 'NR==2 {print $2}')
echo "- CPU: $(nproc) × ${model:-unknown}, $mem RAM"
echo "- OS: $(uname -sr)"
echo "- Go: $(go version | cut -d' ' -f3-)"
echo "- SQLite: WAL, synchronous=FULL, file on ${tmpfs:-?} (${TMPDIR:-/tmp})"
if [[ $stores == *postgres* ]]; then
  if command -v psql >/dev/null; then
    pgver=$(psql "$MITO_TEST_PG_URL" -tAc "SHOW server_version" 2>/dev/null || echo "?")
    pgset=$(psql "$MITO_TEST_PG_URL" -tAc "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')" 2>/dev/null || echo "?")
    echo "- PostgreSQL: $pgver on loopback ($pgset)"
  else
    echo "- PostgreSQL: on loopback"
  fi
fi
echo "- load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shares its cores)"
echo "- command: make bench (TASKS=$TASKS SAMPLES=$SAMPLES)"
echo

# --- the runs ---------------------------------------------------------------
# hosts slots tasks
configs=("2 4 $TASKS" "1 1 $(( TASKS / 4 ))")
header=-header
for st in $stores; do
  for cfg in "${configs[@]}"; do
    read -r hosts slots tasks <<<"$cfg"
    echo "[bench] $st, $hosts×$slots, $tasks tasks" >&2
    "$TMP/bench" -store "$st" -hosts "$hosts" -slots "$slots" -tasks "$tasks" \
      -latency-samples "$SAMPLES" -shim "$SHIM" -timeout 4m ${STATS:+-stats} $header
    header=""
  done
done
echo
echo "- load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
