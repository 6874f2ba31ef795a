"""Miel (dating) with Vybe Live: matches announced live, moderated chat between matched users.
The flow is in ``flow.py``; run it with ``python -m examples.miel`` against ``vybe dev``."""
