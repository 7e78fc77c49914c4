"""queue_app.py's server, made once and then forked: two processes from one SocketIO object.

``python fork_app.py --port N --port2 M --queue URL --channel C``: the app and
its message queue are built (and listening) before ``os.fork()``, as with
gunicorn ``--preload`` or a server that forks its workers; the parent serves
on N, the child on M. The child prints ``child PID`` and exits with its parent.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings

from queue_app import build


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--port2", type=int, required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--channel", required=True)
    args = parser.parse_args()
    app, socketio = build(args.queue, args.channel)
    queue = socketio.server.queue
    assert queue is not None
    if not queue.ready.wait(30):
        sys.exit("the message queue listener did not subscribe")
    # Python warns that threads (the queue's) do not survive the fork: the
    # queue resets itself in the child (pubsub's at-fork handler).
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    pid = os.fork()
    if pid == 0:
        print(f"child {os.getpid()}", flush=True)
        socketio.run(app, host="127.0.0.1", port=args.port2)
        return
    try:
        socketio.run(app, host="127.0.0.1", port=args.port)
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
