# eventbus_test(NAME SOURCES <files> DEPS <targets> LABELS <unit|integration> [TIMEOUT s]
#               [GRPC_MAIN])
# GRPC_MAIN: the binary uses gRPC's client callback API; its main() keeps gRPC's global callback
# queue alive across test cases (tests/testing/grpc_test_main.cc).
function(eventbus_test name)
  cmake_parse_arguments(ARG "GRPC_MAIN" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  if(ARG_GRPC_MAIN)
    target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock eventbus_grpc_test_main)
  else()
    target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()
