#!/usr/bin/env bash
# Builds the python-policy component: ./build.sh [OUT.wasm] (default: target/python-policy.wasm), and puts
# the manifest python-policy.toml beside it as OUT.toml.
# Needs componentize-py (see .ci/install-plugin-toolchains for the pinned version).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/target/python-policy.wasm}"
mkdir -p "$(dirname "$out")"
componentize-py --wit-path "$here/../../../wit" --world access-policy \
  componentize --python-path "$here" app --output "$out"
# The manifest beside the component: `easgate policy` reads its settings and limits from there.
cp "$here/python-policy.toml" "${out%.wasm}.toml"
echo "built $out ($(wc -c <"$out") bytes) and its manifest ${out%.wasm}.toml"
