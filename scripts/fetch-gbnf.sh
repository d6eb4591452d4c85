#!/usr/bin/env bash
# fetch-gbnf.sh — llama.cpp's own GBNF grammars (its grammars/ folder, from the llama.cpp vendored in
# the llama-cpp-python sdist) into ${REALM_CACHE:-~/.cache/realm}/gbnf for tests/test_grammar.c.
# Idempotent: returns at once when the grammars are there. Needs PyPI (pip download) once.
set -euo pipefail
cache="${REALM_CACHE:-$HOME/.cache/realm}"
version=0.3.36
out="$cache/gbnf"
if [ -f "$out/.version" ] && [ "$(cat "$out/.version")" = "$version" ]; then exit 0; fi
sdist="$cache/sdist/llama_cpp_python-$version.tar.gz"
if [ ! -f "$sdist" ]; then
    echo "fetch-gbnf: downloading the llama-cpp-python $version sdist" >&2
    "$cache/venv/bin/pip" download -q --no-binary :all: --no-deps "llama-cpp-python==$version" -d "$cache/sdist"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tar -xzf "$sdist" -C "$tmp" --wildcards "llama_cpp_python-$version/vendor/llama.cpp/grammars/*.gbnf"
mkdir -p "$out"
cp "$tmp/llama_cpp_python-$version/vendor/llama.cpp/grammars/"*.gbnf "$out/"
echo "$version" >"$out/.version"
echo "fetch-gbnf: $(ls "$out"/*.gbnf | wc -l) grammars in $out" >&2
