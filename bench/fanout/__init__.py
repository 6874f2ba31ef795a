"""Fan-out benchmark (``python -m bench.fanout``); see README.md."""
