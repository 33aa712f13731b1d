#!/usr/bin/env bash
# Issue 11, "a partition log that runs at the disk's speed": `dmq bench produce` / `consume`
# (each its own local cluster, 3 controllers + 3 brokers, RF 3, acks=all, fsync on) and the same
# workloads against a 3-node NATS JetStream cluster on loopback (stream R3, file storage,
# `dmq-nats-bench`, our async-nats client), alternated in one run, with the disk measured in
# the same run, then a table with the ratios against issue 11's targets.
#
#   tests/bench/produce_vs_nats.sh                    # 2 rounds (about 3 minutes on 2 cores)
#   tests/bench/produce_vs_nats.sh --rounds 4
#   tests/bench/produce_vs_nats.sh --no-build         # use the release binaries already built
#   tests/bench/produce_vs_nats.sh --check            # exit 1 unless every target is met
#   tests/bench/produce_vs_nats.sh --records 20000 --unbatched-records 5000 --sequential-records 500
#
# Workloads (both systems; 1 KiB values, one partition / one stream subject, 3 replicas):
#   1 batching producer: --records (default 100,000) with 4,096 records outstanding; dmq's
#     producer batches (256 KiB requests, 2 ms linger, 4 requests in flight), NATS publishes
#     asynchronously with 4,096 acks pending (its pipelined mode);
#   2 one record per request, 256 in flight: --unbatched-records (default 20,000); dmq with
#     `--records-per-request 1 --max-in-flight-requests 256 --in-flight 256`, NATS with 256 acks
#     pending (every NATS publish is one message);
#   3 sequential publish+ack: --sequential-records (default 2,000), 1 in flight: p50;
#   4 consume: fill --records, then time reading them back from the start;
#   5 bytes the brokers (NATS: servers) wrote during workload 1 (/proc/PID/io write_bytes,
#     summed) per byte of records per replica.
# NATS publishes to (and reads from) the stream's leader, as dmq's client talks to the
# partition leader. Round 1 runs dmq first in each workload's pair, round 2 NATS first, and so
# on. Each run gets a fresh cluster and data directories under $TMPDIR (default /tmp): the
# disk measured. Each run first waits (at most 120 s) for the machine to be quiet; "other CPU %"
# is what processes outside the run took while it ran (above 5% the figures are disturbed).
# The disk, before and after the rounds: `dd bs=1M count=1000 conv=fdatasync` (MB/s, the mean
# of both is "dd"), and one 4 KiB write + fdatasync (O_DSYNC), 1,000 times (ms per write).
# NATS: Debian's nats-server (2.9), installed with apt-get if missing (root needed), default
# settings (it does not fsync each message: sync_interval 2 min), killed by PID on exit.
# Targets (issue 11), in every round: 1 >= 3x NATS's msg/s and >= 60% of dd / 3 (MB/s);
# 2 >= 1x NATS's msg/s; 3 p50 <= 1.5x NATS's; 4 >= 2x NATS's msg/s; 5 <= 1.2; no errors.
#
# Environment: CARGO_TARGET_DIR (default target), NATS_SERVER (binary, default from PATH).
# Exit status: 0 (with --check: 0 only if every target is met in every round), 1 a target
# missed with --check, 2 cannot run here (no nats-server and not root), other: a run failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/bench/common.sh
source tests/bench/common.sh

rounds=2
build=1
check=0
records=100000
unbatched=20000
sequential=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --check) check=1; shift ;;
    --records) records=$2; shift 2 ;;
    --unbatched-records) unbatched=$2; shift 2 ;;
    --sequential-records) sequential=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

TARGET=${CARGO_TARGET_DIR:-target}
DMQ=$TARGET/release/dmq
CLIENT=$TARGET/release/dmq-nats-bench

# --- tools ----------------------------------------------------------------------------------
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || true)}
if [ -z "$NATS_SERVER" ]; then
  install_pkgs nats-server
  NATS_SERVER=$(command -v nats-server)
fi
command -v jq >/dev/null || install_pkgs jq

if [ "$build" = 1 ]; then
  echo "== cargo build --release -p dmq; cargo build --release -p dmq-tests --bin dmq-nats-bench"
  # Two builds, not one: built together, dmq would get dmq-tests' fault-injection feature of
  # dmq-controller (cargo unifies features within one build).
  cargo build -q --release -p dmq
  cargo build -q --release -p dmq-tests --bin dmq-nats-bench
fi

# --- processes: every one started here is killed by PID on exit --------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/dmq-vs-nats.XXXXXX")
nats_pids=()
dmq_pid=
client_pid=
stop_nats() {
  local p
  # SIGKILL: their data is thrown away.
  for p in "${nats_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${nats_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  nats_pids=()
}
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  # `dmq bench` runs in a session of its own (setsid): its controllers and brokers share its
  # process group, so they go with it.
  if [ -n "$dmq_pid" ]; then
    kill -TERM -- "-$dmq_pid" 2>/dev/null || true
    wait "$dmq_pid" 2>/dev/null || true
  fi
  if [ -n "$client_pid" ]; then
    kill "$client_pid" 2>/dev/null || true
    wait "$client_pid" 2>/dev/null || true
  fi
  stop_nats
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


start_nats() { # $1: run name; sets nats_servers
  local dir=$work/$1 i routes="" deadline
  local -a client route
  for i in 1 2 3; do
    client[i]=$(free_port)
    route[i]=$(free_port)
    routes="${routes:+$routes, }nats-route://127.0.0.1:${route[i]}"
  done
  nats_servers="nats://127.0.0.1:${client[1]},nats://127.0.0.1:${client[2]},nats://127.0.0.1:${client[3]}"
  mkdir -p "$dir"
  for i in 1 2 3; do
    cat >"$dir/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:${client[i]}
jetstream {
  store_dir: "$dir/n$i"
}
cluster {
  name: dmq-bench
  listen: 127.0.0.1:${route[i]}
  routes: [$routes]
}
EOF
    "$NATS_SERVER" -c "$dir/n$i.conf" >"$dir/n$i.log" 2>&1 &
    nats_pids+=($!)
  done
  # Listening: every client port is open (dmq-nats-bench then waits for JetStream to take the
  # stream: the meta leader is elected first).
  deadline=$((SECONDS + 30))
  while :; do
    for i in 0 1 2; do
      if ! kill -0 "${nats_pids[i]}" 2>/dev/null; then
        echo "nats-server n$((i + 1)) exited at start-up:" >&2
        tail -20 "$dir/n$((i + 1)).log" >&2
        return 1
      fi
    done
    if (: </dev/tcp/127.0.0.1/"${client[1]}") 2>/dev/null &&
      (: </dev/tcp/127.0.0.1/"${client[2]}") 2>/dev/null &&
      (: </dev/tcp/127.0.0.1/"${client[3]}") 2>/dev/null; then
      break
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "nats-server not listening after 30 s; logs in $dir" >&2
      return 1
    fi
    sleep 0.1
  done
}

# The CPU that processes outside this run used while it ran: all busy time (/proc/stat user +
# nice + system) minus this script's own and its reaped children's (every server and client of a
# run is waited for before the run ends, `dmq bench`'s nodes by it). Another build or test on the
# machine shows here; such a run's figures are not comparable.
hz=$(getconf CLK_TCK)
ncpu=$(nproc)

# Before each run, wait (at most 120 s) for a second in which the machine is less than 10% busy.

# The workloads: `dmq bench` arguments, then `dmq-nats-bench` arguments.
dmq_args() { # $1: workload
  case "$1" in
    batch) echo "produce --num-records $records" ;;
    single) echo "produce --num-records $unbatched --records-per-request 1 --max-in-flight-requests 256 --in-flight 256" ;;
    seq) echo "produce --num-records $sequential --in-flight 1" ;;
    consume) echo "consume --num-records $records" ;;
  esac
}
nats_args() { # $1: workload
  case "$1" in
    batch) echo "produce --num-records $records --in-flight 4096" ;;
    single) echo "produce --num-records $unbatched --in-flight 256" ;;
    seq) echo "produce --num-records $sequential --in-flight 1" ;;
    consume) echo "consume --num-records $records" ;;
  esac
}

run_dmq() { # $1: run name, $2: workload
  local out=$work/$1.json mark started
  wait_quiet
  mark=$(cpu_mark)
  started=$SECONDS
  mkdir -p "$work/$1"
  # shellcheck disable=SC2046
  TMPDIR=$work/$1 setsid "$DMQ" bench $(dmq_args "$2") --json >"$out" 2>"$work/$1.err" &
  dmq_pid=$!
  if ! wait "$dmq_pid"; then
    dmq_pid=
    echo "dmq bench $(dmq_args "$2") failed:" >&2
    tail -20 "$work/$1.err" >&2
    return 1
  fi
  dmq_pid=
  # shellcheck disable=SC2086
  other_cpu $mark >"$work/$1.other"
  rm -rf "${work:?}/$1"
  echo "$1 ($((SECONDS - started)) s): $(tail -1 "$out")"
}

run_nats() { # $1: run name, $2: workload
  local out=$work/$1.json mark pids started
  wait_quiet
  mark=$(cpu_mark)
  started=$SECONDS
  start_nats "$1"
  pids=$(IFS=,; echo "${nats_pids[*]}")
  # In the background and waited for, as `dmq bench`: a signal then ends the run at once
  # (bash runs a trap only once the foreground command is done).
  # shellcheck disable=SC2046
  "$CLIENT" $(nats_args "$2") --servers "$nats_servers" --server-pids "$pids" --json \
    >"$out" 2>"$work/$1.err" &
  client_pid=$!
  if ! wait "$client_pid"; then
    client_pid=
    echo "dmq-nats-bench $(nats_args "$2") failed:" >&2
    cat "$work/$1.err" >&2
    return 1
  fi
  client_pid=
  stop_nats
  # shellcheck disable=SC2086
  other_cpu $mark >"$work/$1.other"
  rm -rf "${work:?}/$1"
  echo "$1 ($((SECONDS - started)) s): $(tail -1 "$out")"
  sed 's/^/  /' "$work/$1.err"
}

# --- the disk ---------------------------------------------------------------------------------
dd_mbps() { # sequential 1 MiB writes, 1,000 MB, fdatasync at the end (in dd's time): MB/s
  local line
  line=$(dd if=/dev/zero of="$work/dd" bs=1M count=1000 conv=fdatasync 2>&1 |
    sed -nE 's/^([0-9]+) bytes .* copied, ([0-9.e+-]+) s,.*/\1 \2/p')
  rm -f "$work/dd"
  awk -v l="$line" 'BEGIN { split(l, f, " "); printf "%.1f", f[1] / f[2] / 1e6 }'
}
disk() { # prints "DD_MBPS APPEND_MS OVERWRITE_MS"
  local d a o
  d=$(dd_mbps)
  rm -f "$work/dsync"
  a=$(dsync_ms "")               # each write also grows the file (a journal commit too)
  o=$(dsync_ms "conv=notrunc")   # over the blocks just written: the data flush alone
  rm -f "$work/dsync"
  echo "$d $a $o"
}
# Measured before and after the rounds: the disk (often a virtual one) varies with what else
# the host does, and so does every figure below.
wait_quiet
read -r dd1 da1 do1 < <(disk)
echo "== disk ($(df -PT "$work" | awk 'NR==2 { print $1 ", " $2 }')): dd 1 MiB x 1000 + fdatasync" \
  "$dd1 MB/s; 4 KiB write + fdatasync: $da1 ms appending, $do1 ms overwriting; load average $(loadavg)"

echo "== $rounds rounds; $("$NATS_SERVER" --version), dmq $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
workloads="batch single seq consume"
for r in $(seq 1 "$rounds"); do
  for w in $workloads; do
    if [ $((r % 2)) = 1 ]; then
      run_dmq "r$r-$w-dmq" "$w"
      run_nats "r$r-$w-nats" "$w"
    else
      run_nats "r$r-$w-nats" "$w"
      run_dmq "r$r-$w-dmq" "$w"
    fi
  done
done

read -r dd2 da2 do2 < <(disk)
echo "== disk after the rounds: dd $dd2 MB/s; 4 KiB write + fdatasync: $da2 ms appending," \
  "$do2 ms overwriting; load average $(loadavg)"

# --- the table --------------------------------------------------------------------------------
field() { jq -r "$2" "$work/$1.json" | tail -1; }
# Bytes written per byte of records per replica (workload 1); "nan" when not reported.
amplification() {
  jq -r 'if .broker_io then .broker_io.write_bytes / (.records * .record_size * .replication_factor) else "nan" end' \
    "$work/$1.json" | tail -1
}
others=""
rows=""
for r in $(seq 1 "$rounds"); do
  row="$r"
  round_others=""
  for s in dmq nats; do
    row="$row $(field "r$r-batch-$s" .records_per_s) $(field "r$r-single-$s" .records_per_s)"
    row="$row $(field "r$r-seq-$s" .latency.p50_ms) $(field "r$r-consume-$s" .records_per_s)"
    row="$row $(amplification "r$r-batch-$s")"
    row="$row $(jq -s 'map(.errors) | add' "$work/r$r-batch-$s.json" "$work/r$r-single-$s.json" \
      "$work/r$r-seq-$s.json" "$work/r$r-consume-$s.json")"
    for w in $workloads; do
      others="$others $(cat "$work/r$r-$w-$s.other")"
      round_others="$round_others $(cat "$work/r$r-$w-$s.other")"
    done
  done
  # shellcheck disable=SC2086 # one figure a word
  row="$row $(printf '%s\n' $round_others | sort -g | tail -1)"
  rows="$rows$row"$'\n'
done
echo
# shellcheck disable=SC2086 # one figure a word
busiest=$(printf '%s\n' $others | sort -g | tail -1)
if awk -v b="$busiest" 'BEGIN { exit !(b > 5) }'; then
  echo "WARNING: other processes used up to $busiest% of the machine during a run: these figures are"
  echo "disturbed (compare runs on a quiet machine)."
fi
printf '%s' "$rows" | awk -v dd1="$dd1" -v dd2="$dd2" -v da1="$da1" -v da2="$da2" \
  -v do1="$do1" -v do2="$do2" -v size=1024 -v recs="$records" -v unb="$unbatched" \
  -v sq="$sequential" '
  # Fields: round; dmq: batch/s single/s seq-p50 consume/s amplification errors; NATS: the
  # same; the other CPU % of the busiest run of the round.
  function mb(x) { return x * size / 1e6 }
  {
    n++
    for (i = 2; i <= 13; i++) v[n, i] = $i
    # ratio per target: dmq/NATS (p50: dmq/NATS, lower is better)
    ok[1] += ($2 >= 3 * $8); ok[2] += (mb($2) >= 0.6 * dd / 3); ok[3] += ($3 >= $9)
    ok[4] += ($4 <= 1.5 * $10); ok[5] += ($5 >= 2 * $11); ok[6] += ($6 != "nan" && $6 <= 1.2)
    ok[7] += ($7 == 0); nerr_n += $13
    printf "round %d: batching %.2fx NATS and %.2f of dd/3; 1/request %.2fx; sequential p50 %.2fx; consume %.2fx; write amplification %.2f (NATS %.2f); errors dmq %d, NATS %d; other CPU up to %s%%\n",
      $1, $2 / $8, mb($2) / (dd / 3), $3 / $9, $4 / $10, $5 / $11, $6, $12, $7, $13, $14
  }
  BEGIN { dd = (dd1 + dd2) / 2 }
  function mean(i,   k, s) { s = 0; for (k = 1; k <= n; k++) s += v[k, i]; return s / n }
  function met(j) { return ok[j] == n ? sprintf("met (%d/%d)", ok[j], n) : sprintf("NOT met (%d/%d)", ok[j], n) }
  END {
    printf "\nmeans over %d round(s); dd %.1f MB/s (before %.1f, after %.1f), dd / 3 = %.1f MB/s\n", n, dd, dd1, dd2, dd / 3
    fmt = "%-47s %12s %12s %8s  %-24s %s\n"
    printf fmt, "workload", "dmq", "NATS", "ratio", "target", "met (rounds)"
    b = mean(2); bn = mean(8)
    printf fmt, sprintf("1 batching producer, %d x 1 KiB, msg/s", recs), sprintf("%.0f", b), sprintf("%.0f", bn), sprintf("%.2f", b / bn), ">= 3x NATS", met(1)
    printf fmt, "  same, MB/s vs dd / 3", sprintf("%.1f", mb(b)), sprintf("%.1f", mb(bn)), sprintf("%.2f", mb(b) / (dd / 3)), ">= 0.60 of dd / 3 (dmq)", met(2)
    s1 = mean(3); s1n = mean(9)
    printf fmt, sprintf("2 1 record/request, 256 in flight, msg/s"), sprintf("%.0f", s1), sprintf("%.0f", s1n), sprintf("%.2f", s1 / s1n), ">= 1x NATS", met(3)
    p = mean(4); pn = mean(10)
    printf fmt, sprintf("3 sequential publish+ack p50, ms (%d)", sq), sprintf("%.3f", p), sprintf("%.3f", pn), sprintf("%.2f", p / pn), "<= 1.5x NATS", met(4)
    c = mean(5); cn = mean(11)
    printf fmt, sprintf("4 consume %d from the start, msg/s", recs), sprintf("%.0f", c), sprintf("%.0f", cn), sprintf("%.2f", c / cn), ">= 2x NATS", met(5)
    a = mean(6); an = mean(12)
    printf fmt, "5 disk bytes / record byte / replica, in 1", sprintf("%.2f", a), sprintf("%.2f", an), sprintf("%.2f", (an > 0 ? a / an : 0)), "<= 1.2 (dmq)", met(6)
    printf fmt, "  errors (all workloads)", sprintf("%d", mean(7) * n), sprintf("%d", nerr_n), "", "0 (dmq)", met(7)
    printf "disk: 4 KiB write + fdatasync, before / after: %.3f / %.3f ms appending, %.3f / %.3f ms overwriting\n", da1, da2, do1, do2
    printf "workload 2: %d records; dmq acknowledges after fsync, NATS without one per message (its default)\n", unb
    all = 1; for (j = 1; j <= 7; j++) if (ok[j] != n) all = 0
    exit (all ? 0 : 1)
  }' && met=1 || met=0
if [ "$check" = 1 ] && [ "$met" = 0 ]; then
  exit 1
fi
exit 0
