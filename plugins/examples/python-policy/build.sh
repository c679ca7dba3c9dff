#!/usr/bin/env bash
# Builds the python-policy component: ./build.sh [OUT.wasm] (default: target/python-policy.wasm).
# Needs componentize-py (see .ci/install-plugin-toolchains for the pinned version).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/target/python-policy.wasm}"
mkdir -p "$(dirname "$out")"
componentize-py --wit-path "$here/../../../wit" --world access-policy \
  componentize --python-path "$here" app --output "$out"
echo "built $out ($(wc -c <"$out") bytes)"
