# shellcheck shell=bash disable=SC2154 # work, hz and ncpu come from the sourcing script
# Shared by the side-by-side benchmarks (metadata_vs_etcd.sh, produce_vs_nats.sh): sourced,
# not run. The caller sets `work` (its temporary directory), `hz` (clock ticks per second) and
# `ncpu` before calling cpu_mark, other_cpu, wait_quiet or dsync_ms.

install_pkgs() {
  if [ "$(id -u)" != 0 ]; then
    echo "missing $*; install them (apt-get install $*) or run as root" >&2
    exit 2
  fi
  echo "== apt-get install $*"
  # A Debian image with an init system would also start the packaged service on its default
  # ports, which these scripts do not use.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

# Ports below the ephemeral range (an outgoing connection may take one from it at any time),
# free now and distinct.
taken=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    case "$taken" in *" $p "*) continue ;; esac
    if [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then
      taken="$taken$p "
      echo "$p"
      return 0
    fi
  done
}

cpu_mark() { # prints "MACHINE_TICKS OWN_TICKS SECONDS"
  local m o
  m=$(awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat)
  o=$(sed 's/.*) //' "/proc/$$/stat" | awk '{ print $12 + $13 + $14 + $15 }')
  echo "$m $o $EPOCHREALTIME"
}
other_cpu() { # $1 $2 $3: a cpu_mark; prints the % of the machine others used since
  local m o t
  read -r m o t < <(cpu_mark)
  awk -v m0="$1" -v o0="$2" -v t0="$3" -v m="$m" -v o="$o" -v t="$t" -v hz="$hz" -v n="$ncpu" \
    'BEGIN { x = ((m - m0) - (o - o0)) / hz / ((t - t0) * n) * 100; printf "%.1f", (x < 0 ? 0 : x) }'
}
wait_quiet() {
  local deadline=$((SECONDS + 120)) m0 m1 waited=0
  while :; do
    m0=$(awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat)
    sleep 1
    m1=$(awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat)
    if [ $(((m1 - m0) * 100)) -lt $((hz * ncpu * 10)) ]; then
      [ "$waited" = 1 ] && echo "   (the machine is quiet again)"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "   (still busy after 120 s: running anyway)"
      return 0
    fi
    [ "$waited" = 0 ] && echo "   (the machine is busy: waiting up to 120 s for it to be quiet)"
    waited=1
  done
}
dsync_ms() { # prints ms per write; $1: extra dd flags
  local secs n=1000
  # shellcheck disable=SC2086
  secs=$(dd if=/dev/zero of="$work/dsync" bs=4k count=$n oflag=dsync $1 2>&1 |
    sed -nE 's/.* copied, ([0-9.e+-]+) s,.*/\1/p')
  awk -v s="$secs" -v n="$n" 'BEGIN { printf "%.3f", s * 1000 / n }'
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
