#!/usr/bin/env bash
# The quick-start demo: start the bundled demo service, attach hookit to it for a few seconds
# with a live trace of one function and a count table with latency histograms for all of its
# functions, detach, and show that the service still answers — and never answered wrongly.
set -euo pipefail
cd "$(dirname "$0")/.."
HOOKIT=${HOOKIT:-.build/debug/hookit}

testtargets/build/demo > /tmp/hookit-demo.out 2>&1 &
DEMO=$!
trap 'kill $DEMO 2>/dev/null || true' EXIT
sleep 1.2

echo "== the demo service is running as PID $DEMO"
tail -n 1 /tmp/hookit-demo.out

echo
echo "== hookit symbols $DEMO 'demo:demo_*'"
$HOOKIT symbols "$DEMO" 'demo:demo_*'

echo
echo "== hookit attach $DEMO --trace demo:demo_checksum --sig 'demo_checksum(str) -> int' --count 'demo:demo_*' --hist --duration 3"
$HOOKIT attach "$DEMO" --trace demo:demo_checksum --sig 'demo_checksum(str) -> int' \
  --count 'demo:demo_*' --hist --duration 3

echo
echo "== the demo keeps serving after hookit detached, with every answer right"
before=$(tail -n 1 /tmp/hookit-demo.out)
sleep 1.1
after=$(tail -n 1 /tmp/hookit-demo.out)
echo "before: $before"
echo "after:  $after"
[ "$before" != "$after" ] || { echo "demo: the service stopped answering" >&2; exit 1; }
case "$after" in *" 0 wrong answers") ;; *) echo "demo: the service answered wrongly" >&2; exit 1 ;; esac
grep -q "TracerPid:	0" "/proc/$DEMO/status" && echo "no tracer left attached"
