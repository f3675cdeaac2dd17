"""Build the optional C accelerator; everything else is in pyproject.toml."""

from setuptools import Extension, setup

# optional: if the compiler fails, the package installs without them; then
# durus.persistent warns once and the pure-Python code is used.
setup(ext_modules=[
    Extension("durus._persistent", ["durus/_persistent.c"], optional=True),
    Extension("durus._shelf", ["durus/_shelf.c"], optional=True),
    Extension("durus._btree", ["durus/_btree.c"], optional=True),
])
