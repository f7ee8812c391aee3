"""Reads the admin command blocks of README.md (the one source of the commands), for
reflection_buf_curl_test.sh.

  admin_commands.py README buf       prints the `buf curl` block's commands, one per line
  admin_commands.py README grpcurl   the same for the `grpcurl` block
  admin_commands.py README compare   checks both blocks make the same calls with the same data

A block is the ```sh fence after `<!-- admin-commands: NAME -->`; lines ending in a backslash
continue, comments, blank lines and variable assignments are left out.
"""

import re
import shlex
import sys


def commands(readme, name):
    lines = open(readme, encoding="utf-8").read().split("\n")
    marker = "<!-- admin-commands: %s -->" % ("buf curl" if name == "buf" else name)
    if marker not in lines:
        sys.exit("admin_commands: %s has no line %r" % (readme, marker))
    i = lines.index(marker) + 1
    if lines[i] != "```sh":
        sys.exit("admin_commands: %r is not followed by a ```sh block" % marker)
    result, pending = [], ""
    for line in lines[i + 1 :]:
        if line == "```":
            break
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        command = pending + line.strip()
        pending = ""
        if not re.match(r"^[A-Z_]+=", command):
            result.append(command)
    return result


def call(command):
    """(method, -d data) of one command: the same for buf curl and grpcurl."""
    args = shlex.split(command)
    data = args[args.index("-d") + 1] if "-d" in args else None
    if "--list-services" in args or args[-1] == "list":
        return ("list", data)
    method = args[-1].split("127.0.0.1:50051/")[-1]
    return (method, data)


def main():
    readme, mode = sys.argv[1], sys.argv[2]
    if mode == "compare":
        buf, grpcurl = commands(readme, "buf"), commands(readme, "grpcurl")
        for i, (b, g) in enumerate(zip(buf, grpcurl)):
            if call(b) != call(g):
                sys.exit("admin_commands: command %d differs:\n  %s\n  %s" % (i + 1, b, g))
        if len(buf) != len(grpcurl):
            sys.exit("admin_commands: %d buf curl commands but %d grpcurl ones" % (
                len(buf), len(grpcurl)))
        print("admin_commands: the %d grpcurl commands make the buf curl calls" % len(buf))
        return
    for command in commands(readme, mode):
        print(command)


if __name__ == "__main__":
    main()
