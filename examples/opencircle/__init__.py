"""OpenCircle (communities): a space's posts and nested replies, published by the backend after moderating them.
The flow is in ``flow.py``; run it with ``python -m examples.opencircle`` against ``vybe dev``."""
