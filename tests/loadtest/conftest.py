"""The live-gateway fixtures of tests/gateway (start_gateway), for the load test's tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_vybe_gateway_conftest",
                                               Path(__file__).resolve().parents[1] / "gateway" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_gateway_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gateway_conftest)

start_gateway = _gateway_conftest.start_gateway
