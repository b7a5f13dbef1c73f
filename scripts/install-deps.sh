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
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
