"""Loaded by the servers only with ``--server-gc``: a what-if knob, not part of any server.

``BENCH_GC`` is ``freeze`` (gc.freeze() once the app has started is not possible from
here, so: raise the thresholds so gen-2 collections become rare) or ``a,b,c`` thresholds.
"""

import gc
import os

_spec = os.environ.get("BENCH_GC", "")
if _spec:
    if _spec == "off":
        gc.disable()
    else:
        gc.set_threshold(*(int(x) for x in _spec.split(",")))
