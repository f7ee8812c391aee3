# Script mode (cmake -P): writes OUTPUT from TEMPLATE with the version of the build. Run once at
# configure time and again at every build (target eventbus_version_header); configure_file
# rewrites OUTPUT only when its text changes, so an unchanged checkout rebuilds nothing and a new
# commit recompiles server/base/version.cc alone (and relinks the binaries).
#   -DSOURCE_DIR= -DOUTPUT= -DTEMPLATE= -DVERSION= -DBUILD_TYPE= -DCOMPILER= [-DGIT=path to git]
set(EVENTBUS_VERSION "${VERSION}")
set(EVENTBUS_BUILD_TYPE "${BUILD_TYPE}")
set(EVENTBUS_COMPILER "${COMPILER}")
set(EVENTBUS_GIT_DESCRIBE "")
# Outside a git checkout (a source tarball, a container build context without .git) there is no
# description, and git is never required.
if(GIT AND EXISTS "${SOURCE_DIR}/.git")
  execute_process(
    COMMAND "${GIT}" -C "${SOURCE_DIR}" describe --always --dirty
    OUTPUT_VARIABLE describe
    RESULT_VARIABLE result
    ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(result EQUAL 0)
    set(EVENTBUS_GIT_DESCRIBE "${describe}")
  endif()
endif()
configure_file("${TEMPLATE}" "${OUTPUT}" @ONLY)
