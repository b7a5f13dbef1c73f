#!/usr/bin/env bash
# The quick-start demo: start the bundled demo service, list its hookable functions, inject a
# library into it, hook its functions live with trampolines for two seconds (call counts and a C
# fexit program), and show that it keeps serving, untouched, after hookit detached.
set -euo pipefail
cd "$(dirname "$0")/.."
HOOKIT=${HOOKIT:-.build/debug/hookit}

testtargets/build/demo > /tmp/hookit-demo.out 2>&1 &
DEMO=$!
trap 'kill $DEMO 2>/dev/null || true' EXIT
sleep 1.2

echo "== demo service running as PID $DEMO"
tail -n 1 /tmp/hookit-demo.out

echo
echo "== hookit symbols $DEMO 'demo:demo_*' 'libc.so.6:strlen'"
$HOOKIT symbols "$DEMO" 'demo:demo_*' 'libc.so.6:strlen'

echo
echo "== hookit symbols --json $DEMO 'demo:demo_price'"
$HOOKIT symbols --json "$DEMO" 'demo:demo_price'

echo
echo "== hookit inject $DEMO $PWD/testtargets/build/libplugin.so"
$HOOKIT inject "$DEMO" "$PWD/testtargets/build/libplugin.so"
grep libplugin "/proc/$DEMO/maps" | head -n 2

echo
echo "== hookit attach $DEMO --count 'demo:demo_*' --prog fexit:demo:demo_price=.../libprogs.so:record_exit --duration 2"
$HOOKIT attach "$DEMO" --count 'demo:demo_*' \
  --prog "fexit:demo:demo_price=$PWD/testtargets/build/libprogs.so:record_exit" --duration 2

echo
echo "== the demo keeps serving after hookit detached"
before=$(tail -n 1 /tmp/hookit-demo.out)
sleep 1.1
after=$(tail -n 1 /tmp/hookit-demo.out)
echo "before: $before"
echo "after:  $after"
[ "$before" != "$after" ] || { echo "demo: the service stopped answering" >&2; exit 1; }
grep -q "TracerPid:	0" "/proc/$DEMO/status" && echo "no tracer left attached"
