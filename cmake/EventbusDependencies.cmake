# Finds every dependency from Debian 12's packages. Nothing is downloaded at build time.
find_package(Threads REQUIRED)
# libssl-dev: TLS to subscribers (server/net/tls_transport.cc) and the TLS test peers.
find_package(OpenSSL REQUIRED)
find_package(Protobuf REQUIRED)          # FindProtobuf module: Debian ships no CMake config
find_package(gRPC CONFIG REQUIRED)       # gRPC::grpc++, gRPC::grpc++_reflection, gRPC::grpc_cpp_plugin
find_package(absl CONFIG REQUIRED)
# prometheus-cpp::pull (Exposer) and ::core; only server/metrics links it. No version is named:
# whatever prometheus-cpp the distribution ships is used.
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(SIMDJSON REQUIRED IMPORTED_TARGET simdjson)
pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
find_package(GTest CONFIG)
find_package(benchmark CONFIG)

# Descriptors of the standard health service, so that reflection can describe it.
find_path(GRPC_PROTO_DIR grpc/health/v1/health.proto
  PATHS /usr/share/grpc-proto /usr/share/grpc/proto /usr/include
  REQUIRED)
