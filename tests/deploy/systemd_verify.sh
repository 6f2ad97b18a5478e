#!/usr/bin/env bash
# deploy/systemd/qdb-control.service: `systemd-analyze verify` (with ExecStart pointed at
# the binary just built, as verify requires it to exist), the hardening the issue asks
# for, and `systemd-analyze security` (offline) at or under an exposure of 2.0.
set -euo pipefail
root=$1 binary=$2
unit=$root/deploy/systemd/qdb-control.service
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is not installed (Debian package systemd)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s#/usr/bin/qdb-control#$binary#g" "$unit" > "$work/qdb-control.service"
fail=0
out=$(systemd-analyze verify "$work/qdb-control.service" 2>&1) || { echo "verify failed: $out" >&2; fail=1; }
[ -z "$out" ] || { echo "verify complained: $out" >&2; fail=1; }
for want in '^ProtectSystem=strict$' '^NoNewPrivileges=yes$' '^PrivateTmp=yes$' '^Restart=on-failure$' \
            '^EnvironmentFile=' '^ExecReload=/bin/kill -HUP \$MAINPID$' '^(DynamicUser=yes|User=[a-z])'; do
  grep -Eq "$want" "$unit" || { echo "missing: $want" >&2; fail=1; }
done
# exposure is printed as "Overall exposure level for qdb-control.service: 1.5 OK"
line=$(systemd-analyze security --offline=yes "$work/qdb-control.service" 2>&1 | grep 'Overall exposure level') || true
level=$(printf '%s\n' "$line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
if [ -z "$level" ] || ! awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
  echo "exposure too high or unknown: $line" >&2; fail=1
fi
[ $fail = 0 ] && echo "systemd unit: verified, hardened, exposure $level"
exit $fail
