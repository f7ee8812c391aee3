# EventBus container image: a build stage that compiles eventbusd and the eventbus CLI, and a slim
# runtime stage with only their shared libraries, running as a numeric non-root user.
#
#   buildah bud --format docker --layers --storage-driver=vfs --isolation=chroot \
#     --build-arg BASE=<a Debian 12 image> [-v /host/ccache:/ccache] -t eventbus .
#
# scripts/container-test.sh makes the Debian 12 base with debootstrap, builds and runs the image.
# `--format docker` keeps the HEALTHCHECK (the OCI format has no such field); `--layers` caches the
# dependency layer, which only changes with scripts/install-deps.sh. A host folder mounted on
# /ccache gives the compile step a ccache that outlives the layer (optional: without it the
# directory is empty and the build is a cold one). Steps are ordered so that a source edit redoes
# only the compile, the binaries' copy, the library check and the final labels.
ARG BASE=debian:12

FROM ${BASE} AS build
ENV CCACHE_DIR=/ccache CCACHE_MAXSIZE=2G
ARG BUILD_TYPE=RelWithDebInfo
# The dependencies first, from install-deps.sh alone: editing the source keeps this layer.
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN SKIP_TOOLS=1 CONTAINER_BUILD=1 bash /src/scripts/install-deps.sh \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN mkdir -p /ccache \
 && BUILD_DIR=/build BUILD_TYPE=${BUILD_TYPE} BUILD_TARGETS="eventbusd eventbus" \
      bash /src/scripts/build.sh -DEVENTBUS_BUILD_TESTS=OFF -DEVENTBUS_BUILD_BENCH=OFF \
 && strip --strip-debug -o /eventbusd /build/server/service/eventbusd \
 && strip --strip-debug -o /eventbus /build/client/eventbus \
 && (ccache -s 2>/dev/null | grep -E "Hits|Misses|cache hit|cache miss" || true)

FROM ${BASE}
# Runtime libraries only (ldd of both binaries; prometheus-cpp for --metrics_listen). No shell
# tools are added; `sleep` (coreutils, essential) stays for the Kubernetes preStop pause. The
# data directory belongs to the runtime user (Kubernetes' fsGroup does the same for a volume).
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 libsimdjson14 libsqlite3-0 \
      libre2-9 libc-ares2 libssl3 zlib1g libprometheus-cpp-pull1.0 libprometheus-cpp-core1.0 \
      ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
      /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \
 && mkdir -p /var/lib/eventbus \
 && chown 65532:65532 /var/lib/eventbus \
 && chmod 0750 /var/lib/eventbus
LABEL org.opencontainers.image.title="eventbus" \
      org.opencontainers.image.description="EventBus: OpenSIPS event_stream as a standalone gRPC fan-out service (eventbusd and the eventbus CLI)" \
      org.opencontainers.image.base.name="debian:12"
USER 65532:65532
# Inside a container eventbusd listens on every interface; metrics stay off unless
# EVENTBUS_METRICS_LISTEN (or --metrics_listen) is set (the Kubernetes manifests set 0.0.0.0:9464).
ENV EVENTBUS_LISTEN=0.0.0.0:50051 \
    EVENTBUS_DATA_DIR=/var/lib/eventbus \
    EVENTBUS_SERVER=127.0.0.1:50051
VOLUME /var/lib/eventbus
WORKDIR /var/lib/eventbus
EXPOSE 50051 9464
# Healthy when the EventBus service itself is SERVING (the store has loaded), as Kubernetes'
# readiness probe sees it. EVENTBUS_SERVER must follow a changed --listen port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/eventbus", "--timeout_ms=2500", "health", "eventbus.v1.EventBusService"]
# eventbusd handles SIGTERM itself as PID 1: stop accepting, drain queued deliveries within
# --shutdown_grace_ms, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/eventbusd"]
COPY --from=build /eventbusd /eventbus /usr/local/bin/
# Fails the build, naming the library, if the runtime stage lacks one the binaries need.
RUN if ldd /usr/local/bin/eventbusd /usr/local/bin/eventbus | grep "not found"; then \
      echo "runtime stage: missing shared libraries (above)" >&2; exit 1; fi
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
