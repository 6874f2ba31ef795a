"""Worked examples of the sister apps' integrations with Vybe Live, one package per app.

Start the gateway with the example namespaces, then run one example:

    VYBE_NAMESPACES=examples/namespaces.toml .venv/bin/vybe dev
    .venv/bin/python -m examples.miel          # or examples.soulseer, examples.opencircle, examples.vibeup

``examples/common.py`` holds what they share (the dev config, member tokens, an inbox of events).
"""
