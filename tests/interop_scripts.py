"""The scripts the interop tests run under our durus and under Durus 4.3
(the sides fixture): write, change (and pack) and read the interop_model
in a FileStorage file named by their first argument."""

# What every script below starts with: it runs under either side's durus.
OPEN_MODEL = """
import sys
from durus.connection import Connection
from durus.file_storage import FileStorage
import interop_model
"""

WRITE = OPEN_MODEL + """
storage = FileStorage(sys.argv[1])
connection = Connection(storage)
interop_model.populate(connection.get_root(), sys.argv[2])
connection.commit()
storage.close()
"""

MUTATE = OPEN_MODEL + """
storage = FileStorage(sys.argv[1])
connection = Connection(storage)
interop_model.mutate(connection.get_root(), sys.argv[2])
connection.commit()
if sys.argv[3:] == ["pack"]:
    connection.pack()
storage.close()
"""

READ = OPEN_MODEL + """
storage = FileStorage(sys.argv[1], readonly=True)
print(interop_model.summarize(Connection(storage).get_root()))
"""
