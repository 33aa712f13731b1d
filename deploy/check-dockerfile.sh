#!/usr/bin/env bash
# Static checks of deploy/Dockerfile (no Docker engine is needed or used): multi-stage, a release
# build of `dmq` with the lock file, a slim runtime stage that runs as a numeric non-root user,
# and a build context that holds every workspace member.
set -euo pipefail
cd "$(dirname "$0")/.."
df=${DOCKERFILE:-deploy/Dockerfile}
ignore=${DOCKERIGNORE:-deploy/Dockerfile.dockerignore}
fail=0
ok() { echo "  ok   $1"; }
bad() { echo "  FAIL $1" >&2; fail=1; }
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

echo "== $df"
# The instructions of the last stage (the image that runs).
runtime=$(awk 'toupper($1)=="FROM"{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$df")

check "multi-stage (at least two FROM)" test "$(grep -ciE '^FROM[[:space:]]' "$df")" -ge 2
check "builder stage is rust:1.95 (bookworm)" grep -qE '^FROM rust:1\.95(\.[0-9]+)?-(slim-)?bookworm AS build' "$df"
check "release build of dmq with --locked" grep -qE 'cargo build --release -p dmq --locked' "$df"
check "runtime stage is debian:bookworm-slim" grep -qE '^FROM debian:bookworm-slim' <<<"$runtime"
check "runtime copies the binary from the build stage" grep -qE '^COPY --from=build .* /usr/local/bin/dmq' <<<"$runtime"
check "runtime installs ca-certificates only, without recommends" \
    grep -qE 'apt-get install -y --no-install-recommends ca-certificates[[:space:]]*(\\|&&|$)' <<<"$runtime"
last_user=$(grep -E '^USER[[:space:]]' <<<"$runtime" | tail -n 1 | awk '{print $2}')
check "runtime USER is numeric uid:gid (got '${last_user}')" grep -qE '^[0-9]+:[0-9]+$' <<<"$last_user"
check "runtime USER is not root" test "${last_user%%:*}" != 0 -a -n "$last_user"
check "no USER root / USER 0 anywhere" bash -c "! grep -qiE '^USER[[:space:]]+(root|0)([:[:space:]]|\$)' '$df'"
check "data dir /var/lib/dmq owned by the runtime user" \
    grep -qE "install -d -o ${last_user%%:*} -g ${last_user##*:} .*/var/lib/dmq" <<<"$runtime"
check "ENTRYPOINT is exec form /usr/local/bin/dmq" grep -qE '^ENTRYPOINT \["/usr/local/bin/dmq"\]' "$df"
check "EXPOSE 9092 9093 9094" grep -qE '^EXPOSE 9092 9093 9094$' "$df"
check "no ADD with a URL (fetches belong in RUN with checks)" bash -c "! grep -qiE '^ADD[[:space:]]+https?://' '$df'"
check "no :latest base images" bash -c "! grep -qiE '^FROM[[:space:]]+[^ ]+:latest' '$df'"

# Every path the build stage copies exists, and every workspace member is inside one of them.
for p in $(grep -E '^COPY [^-]' "$df" | sed -E 's/^COPY //' | awk '{$NF=""; print}'); do
    check "COPY source '$p' exists in the repository" test -e "$p"
done
copied=$(grep -E '^COPY [^-]' "$df" | sed -E 's/^COPY //' | awk '{$NF=""; print}' | tr -s ' ' '\n')
members=$(awk '/^members *=/{f=1} f{print} f&&/\]/{exit}' Cargo.toml | grep -oE '"[^"]+"' | tr -d '"')
for m in $members; do
    top=${m%%/*}
    if [ "$m" = "." ] || grep -qxF "$top" <<<"$copied"; then
        ok "workspace member '$m' is in the build context copy"
    else
        bad "workspace member '$m' is not copied into the build stage"
    fi
done
check "$ignore keeps target/ out of the context" grep -qE '^\*\*/target$' "$ignore"
check "$ignore keeps .git out of the context" grep -qE '^\.git$' "$ignore"

if [ "$fail" -ne 0 ]; then
    echo "check-dockerfile: FAILED" >&2
    exit 1
fi
echo "check-dockerfile: all checks passed"
