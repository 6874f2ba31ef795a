"""Fan-out against peers (``python -m bench.peers``): ours vs Litestar, python-socketio, Node socket.io."""
