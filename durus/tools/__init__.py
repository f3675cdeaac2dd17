"""Operators' tools, each a `durus NAME` command: durus.tools.NAME, with a
main(argv) and a docstring whose first line is its summary."""

# The commands, in the order `durus -h` lists them.
COMMANDS: tuple[str, ...] = ("info", "verify", "backup", "convert", "browse")
