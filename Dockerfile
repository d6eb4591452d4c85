# realm container image (issue 17): built with the project's own scripts, run on a slim Debian
# with only the runtime libraries, the realm binary and the guest modules.
#
#   docker build -t realm .
#   docker run -p 8080:8080 -v ~/.cache/realm/models:/models:ro realm \
#       serve --host 0.0.0.0 --registry postgresql://user:pw@db/realm -m smollm2=/models/SmolLM2-135M-Instruct.Q4_1.gguf
#
# Models are not baked in: mount them (deploy/compose.yaml, deploy/k8s/).

# ---- build: scripts/setup.sh (Debian packages, the Wasmtime C API from crates.io), make ----
FROM rust:1-bookworm AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
# the dependency steps first, so that source changes reuse their layer
COPY scripts/setup.sh scripts/setup.sh
COPY third_party/wasmtime-capi third_party/wasmtime-capi
RUN apt-get update -qq && scripts/setup.sh apt wasmtime && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make BUILD=build all && strip build/realm

# ---- runtime ----
FROM debian:12-slim
RUN apt-get update -qq && \
    apt-get install -y -qq --no-install-recommends libpcre2-8-0 libicu72 libmicrohttpd12 libcjson1 \
        libssl3 libsqlite3-0 libpq5 libcurl4 ca-certificates curl && \
    rm -rf /var/lib/apt/lists/* && \
    groupadd --system --gid 999 realm && \
    useradd --system --uid 999 --gid realm --home-dir /var/lib/realm --create-home realm
# realm finds its default guest at guest/default.wasm beside the executable
COPY --from=build /src/build/realm /opt/realm/realm
COPY --from=build /src/build/guest/*.wasm /opt/realm/guest/
ENV PATH=/opt/realm:$PATH \
    REALM_REGISTRY_CACHE=/var/lib/realm/guests-cache
USER realm
WORKDIR /var/lib/realm
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["realm"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
