"""durus: a persistent object database for Python 3, drop-in for Durus 4.3."""

__version__ = "4.3.post1"
