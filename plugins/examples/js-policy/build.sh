#!/usr/bin/env bash
# Builds the js-policy component: ./build.sh [OUT.wasm] (default: target/js-policy.wasm), and puts
# the manifest js-policy.toml beside it as OUT.toml.
# Run `npm ci` here first: it installs the pinned componentize-js from package-lock.json.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/target/js-policy.wasm}")"
mkdir -p "$(dirname "$out")"
cli="$here/node_modules/@bytecodealliance/componentize-js/src/cli.js"
if [ ! -f "$cli" ]; then
  echo "componentize-js is not installed: run 'npm ci' in $here" >&2
  exit 1
fi
# No HTTP and no fetch events: a policy has no business with either. Clocks and randomness
# go too, so Date.now() cannot stand in for sync-info.now. stdio stays: uncaught errors
# print there and reach the host log.
# componentize-js reads the WIT from inside a Wasm sandbox that sees the working directory
# only: give it relative paths.
cd "$here/../../.."
node "$cli" plugins/examples/js-policy/policy.js --wit wit --world-name access-policy \
  --disable http fetch-event clocks random --out "$out"
# The manifest beside the component: `easgate policy` reads its settings and limits from there.
cp "$here/js-policy.toml" "${out%.wasm}.toml"
echo "built $out ($(wc -c <"$out") bytes) and its manifest ${out%.wasm}.toml"
