#!/usr/bin/env bash
# The demo behind `make demo`: a coordinator on the embedded default (SQLite
# and artifacts under .demo/data) with the two local hosts of
# examples/inventories/local.yaml; a few tasks submitted, waited for and
# shown, and a two-step pipeline fed by an attachment; then everything
# stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/.demo
MITO=$ROOT/bin/mito
PORT=${MITO_DEMO_PORT:-7801}
export MITO_COORDINATOR=http://127.0.0.1:$PORT
export MITO_CONFIG_DIR=$DEMO/config
export MITO_ADMIN_PASSWORD=demo-password

rm -rf "$DEMO"
mkdir -p "$DEMO"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "starting the coordinator (log in .demo/coordinator.log)"
"$MITO" coordinator --listen 127.0.0.1:$PORT --data-dir "$DEMO/data" \
  --inventory examples/inventories/local.yaml >"$DEMO/coordinator.log" 2>&1 &
COORD=$!
stop() {
  if kill -0 $COORD 2>/dev/null; then
    kill -TERM $COORD
    wait $COORD || true
  fi
}
trap stop EXIT
step "mito client login -u admin"
for i in $(seq 100); do   # the coordinator may still be starting
  if MITO_PASSWORD=$MITO_ADMIN_PASSWORD "$MITO" client login -u admin 2>"$DEMO/login.err"; then break; fi
  [ "$i" = 100 ] && { cat "$DEMO/login.err"; echo "the coordinator did not start; see .demo/coordinator.log" >&2; exit 1; }
  sleep 0.1
done

step "mito client hosts list"
sleep 1
"$MITO" client hosts list

step "submitting four tasks"
submit() {
  echo "\$ mito client submit $(printf '%q ' "$@")"
  id=$("$MITO" client submit -q "$@")
  echo "submitted task $id"
  IDS="$IDS $id"
}
IDS=""
submit -l demo -- uname -a
submit -l demo -t cpu --shell 'echo "computing on $(hostname) in $PWD"; seq 1 5 | awk "{s+=\$1} END {print s}"'
submit -l demo --priority 10 --shell 'for i in 1 2 3; do echo "x,$i,$((i*i))"; done > "$MITO_OUTPUT_DIR/squares.csv"; echo wrote squares.csv'
submit -l demo --env GREETING=hello -- sh -c 'echo "$GREETING from task $MITO_TASK_ID attempt $MITO_ATTEMPT"'
IDS=${IDS# }

step "mito client tasks wait $IDS"
"$MITO" client tasks wait $IDS

step "mito client tasks list"
"$MITO" client tasks list --label demo

for id in $IDS; do
  step "mito client tasks logs $id"
  "$MITO" client tasks logs "$id"
done

step "artifacts"
for id in $IDS; do
  if "$MITO" client tasks artifacts list "$id" -o json | grep -q '"name"'; then
    "$MITO" client tasks artifacts list "$id"
    "$MITO" client tasks artifacts download "$id" -o "$DEMO/artifacts/$id"
    echo "downloaded to .demo/artifacts/$id:"
    find "$DEMO/artifacts/$id" -type f | sed "s#^$ROOT/##"
    cat "$DEMO/artifacts/$id"/*.csv
  fi
done

step "a pipeline: an attachment in, one task's artifact into the next"
seq 1000 > "$DEMO/numbers.txt"
echo '$ mito client attachments upload .demo/numbers.txt data/numbers.txt'
"$MITO" client attachments upload "$DEMO/numbers.txt" data/numbers.txt
echo "\$ mito client submit --input attachment:data/numbers.txt --shell 'awk ... > \$MITO_OUTPUT_DIR/sum.txt'"
sum=$("$MITO" client submit -q -l demo --input attachment:data/numbers.txt \
  --shell 'awk "{s += \$1} END {print s}" data/numbers.txt > "$MITO_OUTPUT_DIR/sum.txt"')
echo "submitted task $sum"
echo "\$ mito client submit --input task:$sum/sum.txt=in/sum.txt cat in/sum.txt   # waits for task $sum"
show=$("$MITO" client submit -q -l demo --input "task:$sum/sum.txt=in/sum.txt" cat in/sum.txt)
echo "submitted task $show"
"$MITO" client tasks wait "$sum" "$show"
step "mito client tasks logs $show"
"$MITO" client tasks logs "$show"
step "mito client groups get admin"
"$MITO" client groups get admin

echo
echo "The coordinator keeps its state in .demo/data/mito.db and the artifacts and attachments under .demo/data/artifacts."

step "stopping the coordinator"
stop
trap - EXIT
echo "done."
