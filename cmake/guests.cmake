# Builds every guest/*.c (with the guest SDK in guest/sdk/) to build/guest/<name>.wasm, and every
# tests/guests/*.c to build/tests/guests/<name>.wasm, with clang --target=wasm32-wasi.
# Choice: wasi-libc, not freestanding — malloc, string.h, stdlib.h and math.h come from it and
# import nothing; stdio would import WASI, which the host refuses (guests import module "realm"
# only). Flags: reactor model (_initialize runs constructors once; no per-call dtors), SIMD128
# (the sampler's argmax/top-k scans), --stack-first so that a C stack overflow runs below address
# 0 and traps instead of overwriting the heap, a 128 KiB C stack, debug info stripped.
find_program(REALM_WASM_CLANG NAMES clang-14 clang REQUIRED)
set(REALM_GUEST_FLAGS --target=wasm32-wasi -O2 -std=c11 -Wall -Wextra -Werror -mexec-model=reactor
    -mbulk-memory -msimd128 -Wl,--stack-first -Wl,-z,stack-size=131072 -Wl,--strip-debug
    -Wl,--export=realm_alloc -Wl,--export=realm_free
    -I${CMAKE_SOURCE_DIR}/guest/include -I${CMAKE_SOURCE_DIR}/include)
# the sampler's selection core is shared with the native CLI (src/sample/sample.c)
file(GLOB REALM_GUEST_SDK CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/guest/sdk/*.c)
list(APPEND REALM_GUEST_SDK ${CMAKE_SOURCE_DIR}/src/sample/sample.c)
file(GLOB REALM_GUEST_HDRS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/guest/include/*.h
     ${CMAKE_SOURCE_DIR}/tests/guests/*.h ${CMAKE_SOURCE_DIR}/include/realm/status.h
     ${CMAKE_SOURCE_DIR}/include/realm/abi.h ${CMAKE_SOURCE_DIR}/include/realm/sample.h)

function(realm_add_guests outdir)
  set(outs)
  foreach(src ${ARGN})
    get_filename_component(name ${src} NAME_WE)
    set(out ${outdir}/${name}.wasm)
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${outdir}
      COMMAND ${REALM_WASM_CLANG} ${REALM_GUEST_FLAGS} -o ${out} ${src} ${REALM_GUEST_SDK}
      DEPENDS ${src} ${REALM_GUEST_SDK} ${REALM_GUEST_HDRS}
      COMMENT "guest ${name}.wasm" VERBATIM)
    list(APPEND outs ${out})
  endforeach()
  set(REALM_GUEST_OUTPUTS ${REALM_GUEST_OUTPUTS} ${outs} PARENT_SCOPE)
endfunction()

file(GLOB REALM_GUEST_SRC CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/guest/*.c)
file(GLOB REALM_TEST_GUEST_SRC CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/guests/*.c)
set(REALM_GUEST_OUTPUTS)
realm_add_guests(${CMAKE_BINARY_DIR}/guest ${REALM_GUEST_SRC})
realm_add_guests(${CMAKE_BINARY_DIR}/tests/guests ${REALM_TEST_GUEST_SRC})

# WASI command guests (tests/guests/wasi/*.c: wasi-nn apps as LlamaEdge writes them, docs/wasi-nn.md):
# wasi-libc with stdio, the command model (_start), no realm SDK; they import only
# wasi_snapshot_preview1 and wasi_ephemeral_nn.
file(GLOB REALM_WASI_GUEST_SRC CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/guests/wasi/*.c)
foreach(src ${REALM_WASI_GUEST_SRC})
  get_filename_component(name ${src} NAME_WE)
  set(out ${CMAKE_BINARY_DIR}/tests/guests/wasi/${name}.wasm)
  add_custom_command(OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/tests/guests/wasi
    COMMAND ${REALM_WASM_CLANG} --target=wasm32-wasi -O2 -std=c11 -Wall -Wextra -Werror
            -Wl,--strip-debug -o ${out} ${src}
    DEPENDS ${src} ${CMAKE_SOURCE_DIR}/tests/guests/wasi/wasi_nn.h
    COMMENT "wasi guest ${name}.wasm" VERBATIM)
  list(APPEND REALM_GUEST_OUTPUTS ${out})
endforeach()
add_custom_target(guests ALL DEPENDS ${REALM_GUEST_OUTPUTS})

# The CLI embeds the default guest (src/cli/run_sandbox.c: .incbin of default.wasm), so that
# `realm run` works from any directory; rebuild it when the guest changes.
if(TARGET realm)
  set_source_files_properties(${CMAKE_SOURCE_DIR}/src/cli/run_sandbox.c PROPERTIES
    COMPILE_DEFINITIONS "REALM_DEFAULT_GUEST=\"${CMAKE_BINARY_DIR}/guest/default.wasm\""
    OBJECT_DEPENDS ${CMAKE_BINARY_DIR}/guest/default.wasm)
endif()
