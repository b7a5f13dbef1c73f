#!/usr/bin/env bash
# Installs the Debian packages hookit builds and tests with, only those that are missing.
# Run as root on a fresh machine (apt-get); a no-op when everything is there.
set -euo pipefail

packages=(
  libelf-dev      # ELF symbols (CPtrace's libelf shim)
  libdw-dev       # .eh_frame function extents (functions without symbol sizes)
  libunwind-dev   # remote stack unwinding (libunwind-ptrace)
  libzydis-dev    # x86-64 decoding for the prologue relocator
  libiberty-dev   # demangled C++, Rust and D names (cplus_demangle)
  liblzma-dev     # libunwind's static dependency
  zlib1g-dev      # libelf's dependency
  binutils        # as/ld/nm/readelf/strip: test targets and symbol checks
  make
  util-linux      # setpriv, unshare: the permission-refusal and mount-namespace tests
  # Real programs the RealProgramTests hook (issue 8).
  redis-server    # redis under load
  redis-tools     # redis-benchmark, redis-cli
  python3         # a libc-wide hook in a live interpreter
  nginx-light     # master as root, workers as www-data: processes of another user
  curl            # requests to nginx
  # The engines hookit's exports feed (issue 15): a real scrape and a real OTLP schema check.
  prometheus                # scrapes the node exporter in ExportTests
  prometheus-node-exporter  # its textfile collector reads hookit's --prometheus file
  python3-venv              # the test venv below (Debian's python3 has no ensurepip without it)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PyPI packages the tests use, in a venv of the project's own (.venv-test, gitignored): the
# OpenTelemetry protobuf schema that checks every line hookit's --otlp writes.
VENV="$(cd "$(dirname "$0")/.." && pwd)/.venv-test"
PY_PACKAGES=(opentelemetry-proto==1.45.2)
if ! "$VENV/bin/python" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
  echo "install-deps: making $VENV with ${PY_PACKAGES[*]}" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
