# The Rust guest SDK (guest/rust/, issue 18): the crate realm_guest for wasm32-unknown-unknown, its
# example orchestrator as build/guest/rust_example.wasm, and its native unit tests as
# build/guest/rust_sdk_tests (ctest test_rust_sdk; the example runs in test_rust_guest).
# Choices:
#   - Debian's rustc (1.63, packages rustc + libstd-rust-dev-wasm32 from scripts/setup.sh apt),
#     not the rustup toolchain that comes first in PATH: that one builds Wasmtime but has no
#     wasm32 standard library. Set REALM_RUSTC to use another rustc that has it.
#   - rustc directly, not cargo: the crate has no dependencies, and rustc needs no registry,
#     lock file or network.
#   - wasm32-unknown-unknown: the realm ABI is not WASI (a guest imports module "realm" only).
#     rustc links it with the stack first (an overflow traps instead of overwriting the heap)
#     and a 1 MiB stack; debug info is stripped, the name section kept for trap messages.
option(REALM_REQUIRE_RUST_GUEST "Fail if no rustc with the wasm32 standard library is found" ON)
set(REALM_RUSTC "/usr/bin/rustc" CACHE FILEPATH
    "rustc with the wasm32-unknown-unknown standard library (Debian: rustc libstd-rust-dev-wasm32)")

set(REALM_HAVE_RUST_GUEST OFF)
if(EXISTS "${REALM_RUSTC}")
  execute_process(COMMAND ${REALM_RUSTC} --print sysroot OUTPUT_VARIABLE _realm_rust_sysroot
                  OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _realm_rust_rc)
  if(_realm_rust_rc EQUAL 0 AND
     IS_DIRECTORY "${_realm_rust_sysroot}/lib/rustlib/wasm32-unknown-unknown/lib")
    set(REALM_HAVE_RUST_GUEST ON)
  endif()
endif()
if(NOT REALM_HAVE_RUST_GUEST)
  if(REALM_REQUIRE_RUST_GUEST)
    message(FATAL_ERROR "no wasm32-unknown-unknown standard library for ${REALM_RUSTC}: run "
                        "scripts/setup.sh apt (Debian packages rustc libstd-rust-dev-wasm32)")
  endif()
  message(WARNING "Rust guest SDK not built: no rustc with the wasm32 standard library")
  return()
endif()

set(REALM_RUST_DIR ${CMAKE_SOURCE_DIR}/guest/rust)
set(REALM_RUST_OUT ${CMAKE_BINARY_DIR}/guest)
file(GLOB REALM_RUST_SRC CONFIGURE_DEPENDS ${REALM_RUST_DIR}/src/*.rs)
set(REALM_RUSTC_FLAGS --edition 2021 -D warnings --crate-name realm_guest)
set(REALM_RUST_WASM_FLAGS --target wasm32-unknown-unknown -O -C strip=debuginfo)

add_custom_command(OUTPUT ${REALM_RUST_OUT}/librealm_guest.rlib
  COMMAND ${CMAKE_COMMAND} -E make_directory ${REALM_RUST_OUT}
  COMMAND ${REALM_RUSTC} ${REALM_RUSTC_FLAGS} ${REALM_RUST_WASM_FLAGS} --crate-type rlib
          -o ${REALM_RUST_OUT}/librealm_guest.rlib ${REALM_RUST_DIR}/src/lib.rs
  DEPENDS ${REALM_RUST_SRC}
  COMMENT "rust guest SDK librealm_guest.rlib" VERBATIM)

# LTO: the example is one small module with only the imports it calls
add_custom_command(OUTPUT ${REALM_RUST_OUT}/rust_example.wasm
  COMMAND ${REALM_RUSTC} --edition 2021 -D warnings --crate-name rust_example
          ${REALM_RUST_WASM_FLAGS} -C lto --crate-type cdylib
          --extern realm_guest=${REALM_RUST_OUT}/librealm_guest.rlib
          -o ${REALM_RUST_OUT}/rust_example.wasm ${REALM_RUST_DIR}/examples/orchestrator.rs
  DEPENDS ${REALM_RUST_OUT}/librealm_guest.rlib ${REALM_RUST_DIR}/examples/orchestrator.rs
  COMMENT "guest rust_example.wasm" VERBATIM)

# the crate's #[test]s, built natively (the imports are stubs there: see src/sys.rs)
add_custom_command(OUTPUT ${REALM_RUST_OUT}/rust_sdk_tests
  COMMAND ${CMAKE_COMMAND} -E make_directory ${REALM_RUST_OUT}
  COMMAND ${REALM_RUSTC} ${REALM_RUSTC_FLAGS} --test
          -o ${REALM_RUST_OUT}/rust_sdk_tests ${REALM_RUST_DIR}/src/lib.rs
  DEPENDS ${REALM_RUST_SRC} ${CMAKE_SOURCE_DIR}/include/realm/status.h
  COMMENT "rust guest SDK unit tests" VERBATIM)

add_custom_target(rust_guest ALL DEPENDS ${REALM_RUST_OUT}/rust_example.wasm
                  ${REALM_RUST_OUT}/rust_sdk_tests)
