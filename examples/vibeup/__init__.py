"""VIBEUP: a community feed of vibes and reactions, and a member who comes back and resumes where they left.
The flow is in ``flow.py``; run it with ``python -m examples.vibeup`` against ``vybe dev``."""
