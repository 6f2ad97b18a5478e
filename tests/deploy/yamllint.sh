#!/usr/bin/env bash
# yamllint (strict: warnings fail) on every manifest under deploy/, with deploy/.yamllint.
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v yamllint >/dev/null || { echo "yamllint is not installed (Debian package yamllint; tests/run.sh installs it)" >&2; exit 1; }
mapfile -t files < <(find "$root/deploy" -name '*.yaml' -o -name '*.yml' | sort)
[ ${#files[@]} -gt 0 ] || { echo "no manifests found under $root/deploy" >&2; exit 1; }
yamllint -s -c "$root/deploy/.yamllint" "${files[@]}"
echo "yamllint: ${#files[@]} files clean"
