#!/usr/bin/env bash
# House rule: no sprintf, strcpy, strcat, strtok, gets, atoi (or their cousins) in the
# product or its tests. Use snprintf, bounded copies and the strtol family.
set -uo pipefail
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
pattern='\b(sprintf|vsprintf|strcpy|strcat|strncat|strtok|gets|atoi|atol|atoll)[[:space:]]*\('
hits=$(grep -rnE "$pattern" "$root/server" "$root/tests/unit" "$root/tests/integration" "$root/tests/fuzz" --include='*.c' --include='*.h' || true)
if [ -n "$hits" ]; then
  echo "$hits"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "1 passed, 0 failed"
