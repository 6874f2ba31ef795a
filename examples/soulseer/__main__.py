"""``python -m examples.soulseer``: run the flow against ``vybe dev`` and print its report.

Start the gateway first: ``VYBE_NAMESPACES=examples/namespaces.toml .venv/bin/vybe dev``.
"""

from examples.common import main
from examples.soulseer.flow import run

main(run)
