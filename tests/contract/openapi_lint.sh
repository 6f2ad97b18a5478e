#!/usr/bin/env bash
# Lint api/openapi.yaml with Redocly (recommended rules, warnings are failures).
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root/tests"
exec node_modules/.bin/redocly lint --config "$root/api/redocly.yaml" --format stylish \
  "$root/api/openapi.yaml"
