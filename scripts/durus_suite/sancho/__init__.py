"""A stand-in for MEMS Exchange's `sancho` package, as far as Durus 4.3's unit tests use it."""
