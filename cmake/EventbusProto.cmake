# eventbus_proto_library(NAME PROTO_ROOT <dir> PROTOS <files relative to root> [GRPC])
# Runs protoc (and the gRPC plugin) directly, so generated headers sit at
# ${CMAKE_CURRENT_BINARY_DIR}/<same relative path> and include as "eventbus/v1/eventbus.pb.h".
function(eventbus_proto_library name)
  cmake_parse_arguments(ARG "GRPC;OBJECT" "PROTO_ROOT" "PROTOS" ${ARGN})
  set(out "${CMAKE_CURRENT_BINARY_DIR}/gen")
  set(srcs)
  foreach(proto ${ARG_PROTOS})
    string(REGEX REPLACE "\\.proto$" "" base "${proto}")
    set(gen "${out}/${base}.pb.cc" "${out}/${base}.pb.h")
    set(plugin_args)
    if(ARG_GRPC)
      list(APPEND gen "${out}/${base}.grpc.pb.cc" "${out}/${base}.grpc.pb.h")
      set(plugin_args --grpc_out=${out}
          --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>)
    endif()
    add_custom_command(
      OUTPUT ${gen}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
      COMMAND protobuf::protoc --cpp_out=${out} ${plugin_args}
              -I ${ARG_PROTO_ROOT} ${ARG_PROTO_ROOT}/${proto}
      DEPENDS ${ARG_PROTO_ROOT}/${proto} protobuf::protoc
      COMMENT "protoc ${proto}"
      VERBATIM)
    list(APPEND srcs ${gen})
  endforeach()
  if(ARG_OBJECT)
    add_library(${name} OBJECT ${srcs})
  else()
    add_library(${name} STATIC ${srcs})
  endif()
  target_include_directories(${name} PUBLIC ${out})
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf gRPC::grpc++)
  target_compile_options(${name} PRIVATE -w)
endfunction()
