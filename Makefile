# realm — top-level entry points. `make` builds build/realm and the guests; `make test` builds
# everything (release with gcc, ASan+UBSan with clang) and runs every test. Dependencies are
# installed by scripts/setup.sh, which is idempotent and returns at once when all is present.
BUILD      ?= build
ASAN_BUILD ?= build-asan
CACHE      ?= $(HOME)/.cache/realm
VENV       ?= $(CACHE)/venv
JOBS       ?= $(shell nproc)
CMAKE_GEN  := -G Ninja

.PHONY: all deps deps-test serve configure test test-unit test-asan test-py fuzz parity bench clean format format-check

all: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@scripts/setup.sh apt wasmtime

serve: all
	@scripts/fetch-models.sh smollm2
	$(BUILD)/realm serve

deps-test: deps
	@scripts/setup.sh venv models

$(BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(BUILD) $(CMAKE_GEN) -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo

$(ASAN_BUILD)/build.ninja: CMakeLists.txt
	cmake -S . -B $(ASAN_BUILD) $(CMAKE_GEN) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
	  -DREALM_SANITIZE=ON -DREALM_FUZZ=ON

# Every test: the sources' formatting, then the release build runs all labels, the sanitizer
# build the unit and fuzz labels, then the Python tests (server, parity fixtures) against the
# release build.
test: deps-test all $(ASAN_BUILD)/build.ninja
	$(MAKE) format-check
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j $(JOBS) -L 'unit|fuzz|sandbox'
	$(MAKE) test-py

# The abuse suite first, on a quiet machine: its latency bounds (a victim tenant's p99 under
# attack within 2x its solo p99) are measured against the host's state, and the fsync- and
# process-heavy tests of tests/py (registry, multi-node) left it noisier for minutes after.
test-py:
	REALM_BUILD=$(abspath $(BUILD)) $(VENV)/bin/python -m pytest -q tests/abuse
	REALM_BUILD=$(abspath $(BUILD)) $(VENV)/bin/python -m pytest -q tests/py

parity: deps-test all
	REALM_BUILD=$(abspath $(BUILD)) $(VENV)/bin/python tests/parity/run_parity.py

bench: all
	$(VENV)/bin/python bench/vs_llamacpp.py

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# The C sources as .clang-format says (part of `make test`; `make format` fixes what it reports).
format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')
