// Runs a fuzz target without libFuzzer: feeds every file named on the command line (directories
// are read recursively, in sorted order) to LLVMFuzzerTestOneInput once. The normal build links
// each target with this main and registers it with ctest over tests/fuzz/corpus/<target> and
// tests/fuzz/regressions/<target>, so every seed and every crash ever found is replayed by every
// test run. A missing directory is skipped (regressions/<target> exists only once there is one).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

namespace {

namespace fs = std::filesystem;

bool IsInput(const fs::path& path) {
  const std::string name = path.filename().string();
  // READMEs and dot files describe a folder; they are not inputs.
  return !name.empty() && name[0] != '.' && name.rfind("README", 0) != 0;
}

void Collect(const fs::path& path, std::vector<fs::path>* files) {
  std::error_code error;
  if (fs::is_directory(path, error)) {
    std::vector<fs::path> entries;
    for (const fs::directory_entry& entry : fs::recursive_directory_iterator(path)) {
      if (entry.is_regular_file() && IsInput(entry.path())) entries.push_back(entry.path());
    }
    std::sort(entries.begin(), entries.end());
    files->insert(files->end(), entries.begin(), entries.end());
  } else if (fs::is_regular_file(path, error)) {
    files->push_back(path);
  } else {
    std::fprintf(stderr, "skipping %s (does not exist)\n", path.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize != nullptr) LLVMFuzzerInitialize(&argc, &argv);
  std::vector<fs::path> files;
  for (int i = 1; i < argc; ++i) Collect(argv[i], &files);
  for (const fs::path& file : files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "cannot read %s\n", file.c_str());
      return 1;
    }
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Printed before running, so a crash names its input.
    std::fprintf(stderr, "input %s (%zu bytes)\n", file.c_str(), bytes.size());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("replayed %zu inputs\n", files.size());
  if (files.empty()) {
    std::fprintf(stderr, "no inputs: expected a seed corpus\n");
    return 1;
  }
  return 0;
}
