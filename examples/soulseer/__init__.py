"""SoulSeer (consultations): a live session room with a viewer count and chat moderated after delivery.
The flow is in ``flow.py``; run it with ``python -m examples.soulseer`` against ``vybe dev``."""
