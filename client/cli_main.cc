// The `eventbus` command: forwards argv to RunCli (client/cli.h).
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"

int main(int argc, char** argv) {
  // std::cin gets its own buffer, so `raise-stream` can tell when no more input is ready.
  std::ios::sync_with_stdio(false);
  std::vector<std::string> args(argv + 1, argv + argc);
  const char* server = std::getenv("EVENTBUS_SERVER");
  const char* token = std::getenv("EVENTBUS_TOKEN");
  return eventbus::client::RunCli(args, server == nullptr ? "" : server, std::cout, std::cerr,
                                  token == nullptr ? "" : token);
}
