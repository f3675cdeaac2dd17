"""The one switch between the C accelerators and their pure-Python twins.

A module defines its hot functions and classes in Python, then calls
accelerate(globals(), extension, names): each name stays importable as
<name>_py, and <name> is bound to the extension's version when C is chosen.

The environment variable DURUS_PURE_PYTHON chooses, for every module:
"1" forces pure Python; "0" requires C (ImportError if an extension is not
built); unset or "" uses C where it is built and warns once per process
where it is not. Any other value is a ValueError.
"""

import importlib
import os
import warnings
from collections.abc import Iterable

SWITCH = "DURUS_PURE_PYTHON"
_BUILD_HINT = ("build it with `python3 setup.py build_ext --inplace` in a checkout, "
               "or reinstall durus with pip and a C compiler at hand")

# Set once the fallback to pure Python has been reported: one warning a process.
_warned = False


def _c_versions(extension: str, names: tuple) -> list:
    """The extension's objects of these names; ImportError if it lacks one."""
    module = importlib.import_module(extension)
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        # A build left from an older checkout: as good as no build.
        raise ImportError("%s has no %s" % (extension, ", ".join(missing)), name=extension)
    return [getattr(module, name) for name in names]


def _choose(extension: str, names: tuple) -> list | None:
    """The C objects for names, or None for the Python ones, as SWITCH says."""
    global _warned
    setting = os.environ.get(SWITCH, "")
    if setting == "1":
        return None
    if setting == "0":
        try:
            return _c_versions(extension, names)
        except ImportError as error:
            raise ImportError("%s=0 requires the C accelerator %s, which is not built (%s); %s"
                              % (SWITCH, extension, error, _BUILD_HINT),
                              name=extension) from error
    if setting:
        raise ValueError("%s must be unset, empty, '0' (require C) or '1' (pure Python), not %r"
                         % (SWITCH, setting))
    try:
        return _c_versions(extension, names)
    except ImportError:
        if not _warned:
            _warned = True
            # stacklevel 4: past _choose, accelerate and the accelerated module.
            warnings.warn("durus: the C accelerator %s is not built; using the slower "
                          "pure-Python code (%s)" % (extension, _BUILD_HINT),
                          RuntimeWarning, stacklevel=4)
        return None


def accelerate(namespace: dict, extension: str, names: Iterable[str]) -> None:
    """Keep namespace[name] as namespace[name + "_py"] for each name, and bind
    namespace[name] to the same name in the C extension (a module name such
    as "durus._shelf") if the switch chooses C.

    namespace is the calling module's globals(). Anything that captures one
    of these names when the module is run (a base class, a default argument)
    must come after the call, or it keeps the Python version.
    """
    names = tuple(names)
    for name in names:
        namespace[name + "_py"] = namespace[name]
    chosen = _choose(extension, names)
    if chosen is not None:
        namespace.update(zip(names, chosen))
