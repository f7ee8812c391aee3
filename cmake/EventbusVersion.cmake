# The version compiled into eventbusd and eventbus (--version, the start-up log line):
# project(VERSION), `git describe --always --dirty` when the source is a git checkout, the build
# type and the compiler. EVENTBUS_VERSION_DIR holds the generated version_info.h.
find_package(Git QUIET)
set(EVENTBUS_VERSION_DIR ${CMAKE_BINARY_DIR}/generated)
set(EVENTBUS_VERSION_HEADER ${EVENTBUS_VERSION_DIR}/eventbus/version_info.h)
if(CMAKE_BUILD_TYPE)
  set(_eventbus_build_type ${CMAKE_BUILD_TYPE})
else()
  set(_eventbus_build_type "none")
endif()
set(_eventbus_version_args
    -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
    -DOUTPUT=${EVENTBUS_VERSION_HEADER}
    -DTEMPLATE=${PROJECT_SOURCE_DIR}/cmake/version_info.h.in
    -DVERSION=${PROJECT_VERSION}
    -DBUILD_TYPE=${_eventbus_build_type}
    "-DCOMPILER=${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}"
    -DGIT=${GIT_EXECUTABLE})
# At configure time, so the header exists before anything is built ...
execute_process(COMMAND ${CMAKE_COMMAND} ${_eventbus_version_args}
                        -P ${PROJECT_SOURCE_DIR}/cmake/EventbusVersionHeader.cmake)
# ... and at every build, so a new commit shows without re-running cmake. Ninja restats the
# byproduct: when configure_file left it untouched, nothing that includes it is rebuilt.
add_custom_target(eventbus_version_header
  COMMAND ${CMAKE_COMMAND} ${_eventbus_version_args}
          -P ${PROJECT_SOURCE_DIR}/cmake/EventbusVersionHeader.cmake
  BYPRODUCTS ${EVENTBUS_VERSION_HEADER}
  COMMENT "version_info.h (git describe)"
  VERBATIM)
