"""Build the optional C accelerator; everything else is in pyproject.toml."""

from setuptools import Extension, setup

# optional: if the compiler fails, the package installs without it and
# durus.persistent warns once and uses the pure-Python classes.
setup(ext_modules=[Extension("durus._persistent", ["durus/_persistent.c"], optional=True)])
