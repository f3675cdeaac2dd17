"""Every public name of every module of Durus 4.3 imports from the same
module here: asked of the real durus==4.3, module by module (the names a
module defines, and the values it holds, but not the classes and functions
it merely imports from elsewhere)."""

import importlib
import json

import pytest

LIST_NAMES = """
import importlib, json, pkgutil, types, durus
names = {}
for info in pkgutil.iter_modules(durus.__path__):
    module_name = "durus." + info.name
    module = importlib.import_module(module_name)
    names[module_name] = sorted(
        name for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
        and not (isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType,
                                    types.MethodType))
                 and getattr(value, "__module__", None) != module_name))
print(json.dumps(names))
"""


@pytest.fixture(scope="module")
def durus_names(peer_python, tmp_path_factory) -> dict:
    from conftest import run_python
    return json.loads(run_python(peer_python, LIST_NAMES, cwd=tmp_path_factory.mktemp("names")))


def test_every_durus_module_and_name_is_here(durus_names):
    assert len(durus_names) >= 20 and sum(map(len, durus_names.values())) > 130
    missing = {}
    for module_name, names in durus_names.items():
        module = importlib.import_module(module_name)
        absent = [name for name in names if not hasattr(module, name)]
        if absent:
            missing[module_name] = absent
    assert missing == {}
