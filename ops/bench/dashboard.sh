#!/usr/bin/env bash
# The dashboard under load (a measurement, not a test): a release build of
# the browser test that grants 10,000 leases, opens the dashboard in
# headless Chromium, and writes 1,000 key puts a second for a few seconds
# (each an event on the live stream) while a probe in the page records the
# gap between animation frames. Prints the frame gaps, how long after the
# last write its event was on the page, and how many rows the two lists
# hold in the DOM; appends them to ops/bench/RESULTS.md.
#
#   bash ops/bench/dashboard.sh
# Needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver).
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
out=$(mktemp)
for round in $(seq "$ROUNDS"); do
  TENURE_REQUIRE_BROWSER=1 cargo nextest run --release --test dashboard_browser \
    -E 'test(responsive)' --no-capture 2>&1 | grep '^dashboard under load' | tee -a "$out"
done
{
  echo
  echo "### Dashboard under load ($(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo
  echo "Command: \`bash ops/bench/dashboard.sh\` (release build, ${ROUNDS} rounds; Chromium $(chromium --version 2>/dev/null | awk '{print $2}'), headless, on the same 2 cores as the server and the load)."
  echo
  sed 's/^/    /' "$out"
} >> ops/bench/RESULTS.md
rm -f "$out"
