# EventBus container image. Build (on a Debian 12 base image, e.g. one made with debootstrap):
#   buildah bud --storage-driver=vfs --isolation=chroot --build-arg BASE=<image> -t eventbus .
ARG BASE=debian:12

FROM ${BASE} AS build
COPY . /src
RUN SKIP_TOOLS=1 bash /src/scripts/install-deps.sh \
 && BUILD_DIR=/build BUILD_TARGETS="eventbusd eventbus" bash /src/scripts/build.sh -DEVENTBUS_BUILD_TESTS=OFF

FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libsqlite3-0 libsimdjson14 libabsl20220623 ca-certificates \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/server/service/eventbusd /build/client/eventbus /usr/local/bin/
# eventbusd handles SIGTERM itself (it may be PID 1): stop accepting, drain, exit.
ENV EVENTBUS_LISTEN=0.0.0.0:50051 \
    EVENTBUS_DATA_DIR=/var/lib/eventbus
VOLUME /var/lib/eventbus
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/eventbusd"]
