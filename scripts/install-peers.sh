#!/usr/bin/env bash
# Installs the peer tools `make bench` compares hookit with, only those that are missing:
#   bpftrace (kernel uprobes), ltrace (Debian packages) and Frida's Python bindings (PyPI).
# Never fails the bench: a tool that cannot be installed or cannot work here is reported on
# stderr ("install-peers: TOOL unavailable: WHY") and the script still exits 0.
set -euo pipefail

FRIDA_VERSION=17.25.2
# Frida's bindings go into a venv of the project's own (make bench-peers runs the bench with it).
VENV=${VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv-peers}
PYTHON="$VENV/bin/python"

say() { echo "install-peers: $*" >&2; }
unavailable=()
mark() { unavailable+=("$1"); say "$1 unavailable: $2"; }

is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# --- Debian packages: bpftrace, ltrace ----------------------------------------------------------
missing=()
for p in bpftrace ltrace; do
  is_installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    for p in "${missing[@]}"; do mark "$p" "not installed and not root (cannot apt-get install)"; done
  else
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || say "apt-get update failed"
    for p in "${missing[@]}"; do
      apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 \
        || mark "$p" "apt-get install $p failed"
    done
  fi
fi

# --- tracefs/debugfs: bpftrace 0.17 reads/writes /sys/kernel/tracing/uprobe_events -------------
if [ "$(id -u)" -eq 0 ]; then
  if [ ! -e /sys/kernel/tracing/uprobe_events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || say "could not mount tracefs on /sys/kernel/tracing"
  fi
  if [ -d /sys/kernel/debug ] && ! mountpoint -q /sys/kernel/debug; then
    mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || say "could not mount debugfs on /sys/kernel/debug"
  fi
fi

# --- Frida's Python bindings ------------------------------------------------------------------
if [ ! -x "$PYTHON" ]; then
  say "making the venv $VENV"
  python3 -m venv "$VENV" >/dev/null 2>&1 || mark frida "python3 -m venv $VENV failed"
fi
if ! "$PYTHON" -c "import frida, sys; sys.exit(0 if frida.__version__ == '$FRIDA_VERSION' else 1)" 2>/dev/null; then
  say "installing frida==$FRIDA_VERSION (pip)"
  "$PYTHON" -m pip install -q --disable-pip-version-check "frida==$FRIDA_VERSION" >/dev/null 2>&1 \
    || mark frida "pip install frida==$FRIDA_VERSION failed"
fi

# --- Do they work here? ---------------------------------------------------------------------
if command -v bpftrace >/dev/null 2>&1; then
  if ! out=$(timeout 60 bpftrace -e 'BEGIN { exit(); }' 2>&1); then
    mark bpftrace "bpftrace -e 'BEGIN { exit(); }' failed: $(echo "$out" | grep -v RLIMIT_MEMLOCK | tail -1)"
  elif [ ! -e /sys/kernel/tracing/uprobe_events ]; then
    mark bpftrace "tracefs is not mounted (/sys/kernel/tracing/uprobe_events missing)"
  fi
elif ! printf '%s\n' "${unavailable[@]}" | grep -qx bpftrace; then
  mark bpftrace "not installed"
fi

if command -v ltrace >/dev/null 2>&1; then
  timeout 30 ltrace -o /dev/null /bin/true >/dev/null 2>&1 || mark ltrace "ltrace /bin/true failed (ptrace not allowed?)"
elif ! printf '%s\n' "${unavailable[@]}" | grep -qx ltrace; then
  mark ltrace "not installed"
fi

if ! "$PYTHON" -c 'import frida; frida.get_local_device()' >/dev/null 2>&1; then
  printf '%s\n' "${unavailable[@]}" | grep -qx frida || mark frida "python: import frida failed"
fi

if [ ${#unavailable[@]} -eq 0 ]; then
  say "bpftrace, ltrace and frida are installed"
fi
exit 0
