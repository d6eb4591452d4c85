"""The abuse suite reuses tests/py/conftest.py (paths, the realm_bin fixture, start_server, tenant,
new_key, RealmServer). It is loaded under its own module name, realm_py_conftest, and re-exported
here: pytest imports every conftest.py as the module "conftest", so when tests/py and tests/abuse
run together whichever comes last is what `from conftest import ...` in tests/py finds; re-exporting
keeps those imports working either way."""
import importlib.util
import pathlib
import sys

_path = pathlib.Path(__file__).resolve().parents[1] / "py" / "conftest.py"
if "realm_py_conftest" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("realm_py_conftest", _path)
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["realm_py_conftest"] = _mod
    _spec.loader.exec_module(_mod)

from realm_py_conftest import *  # noqa: E402,F401,F403 — fixtures (realm_bin ...) and helpers
from realm_py_conftest import BUILD, MODELS, ROOT, SHARED, RealmServer, model_path, new_key, start_server, tenant  # noqa: E402,F401
