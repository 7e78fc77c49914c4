"""One client interface over the in-process test client and a real network client.

Behaviour tests are written once against :class:`Peer` and run twice (the
``peers`` fixture is parametrized): through ``socketio.test_client()`` and
through the python-socketio client over a real socket to ``socketio``'s own
server. So the test client cannot drift from what the network does.

Events are compared as ``(name, args)`` with ``args`` always the list of
arguments. ``sync()`` makes "nothing else arrived" checks honest over the
network: it round-trips an acknowledged event on the same connection, and a
connection delivers in order, so whatever the server sent before has arrived.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

SYNC_EVENT = "__peer_sync__"


def _load_free_port() -> Any:
    """``free_port`` from tests/conftest.py (a same-named module cannot be imported)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "_relay_tests_root_conftest", Path(__file__).resolve().parent.parent / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.free_port


#: tests/conftest.py's free_port(): a port on 127.0.0.1 that was free a moment ago.
free_port = _load_free_port()


def _sync_handler() -> str:
    return "synced"


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Peer:
    kind = "abstract"

    def connected(self, namespace: str = "/") -> bool:
        raise NotImplementedError

    def connect_error(self, namespace: str = "/") -> Any:
        raise NotImplementedError

    def sid(self, namespace: str = "/") -> str | None:
        raise NotImplementedError

    def emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        raise NotImplementedError

    def ask(self, event: str, *args: Any, namespace: str = "/") -> list[Any]:
        """Emit with an acknowledgement request; return the ack's arguments."""
        raise NotImplementedError

    def on(self, event: str, handler: Any, namespace: str = "/") -> None:
        """Client-side handler; its return value answers server acks."""
        raise NotImplementedError

    def sync(self, namespace: str = "/") -> None:
        raise NotImplementedError

    def take(self, namespace: str = "/") -> list[tuple[str, list[Any]]]:
        """Events received in ``namespace`` since the last take (after a sync)."""
        raise NotImplementedError

    def wait_for(self, name: str, namespace: str = "/", count: int = 1) -> list[list[Any]]:
        """Wait until ``count`` events ``name`` arrived; take every event, return their args."""
        raise NotImplementedError

    def disconnected_reason(self, namespace: str = "/") -> str | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class LocalPeer(Peer):
    """Through ``socketio.test_client()``."""

    kind = "local"

    def __init__(
        self,
        app: Any,
        sio: Any,
        namespaces: tuple[str, ...] = ("/",),
        auth: Any = None,
        headers: dict[str, str] | None = None,
        query: str | None = None,
        wait_timeout: float = 10,
    ) -> None:
        first, *rest = namespaces
        self.client = sio.test_client(
            app, namespace=first, auth=auth, headers=headers, query_string=query
        )
        for ns in rest:
            self.client.connect(ns, auth=auth)
        self._stash: dict[str, list[tuple[str, list[Any]]]] = {}

    def connected(self, namespace: str = "/") -> bool:
        return bool(self.client.is_connected(namespace))

    def connect_error(self, namespace: str = "/") -> Any:
        return self.client.get_connect_error(namespace)

    def sid(self, namespace: str = "/") -> str | None:
        return self.client.get_sid(namespace)

    def emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        self.client.emit(event, *args, namespace=namespace)

    def ask(self, event: str, *args: Any, namespace: str = "/") -> list[Any]:
        self.client.acks = None
        self.client.emit(event, *args, namespace=namespace, callback=True)
        assert self.client.acks is not None, "no acknowledgement"
        return list(self.client.acks["args"])

    def on(self, event: str, handler: Any, namespace: str = "/") -> None:
        self.client.on(event, handler, namespace=namespace)

    def sync(self, namespace: str = "/") -> None:
        pass  # handlers ran before emit() returned

    def _pull(self, namespace: str) -> list[tuple[str, list[Any]]]:
        stash = self._stash.setdefault(namespace, [])
        if self.client.is_connected(namespace):
            for item in self.client.get_received(namespace):
                args = item["args"]
                if item["name"] in ("message", "json"):
                    args = [args]
                stash.append((item["name"], list(args)))
        return stash

    def take(self, namespace: str = "/") -> list[tuple[str, list[Any]]]:
        items = list(self._pull(namespace))
        self._stash[namespace] = []
        return items

    def wait_for(self, name: str, namespace: str = "/", count: int = 1) -> list[list[Any]]:
        items = self.take(namespace)
        found = [args for n, args in items if n == name]
        assert len(found) >= count, f"expected {count} {name!r}, got {items}"
        return found

    def disconnected_reason(self, namespace: str = "/") -> str | None:
        return None if self.client.is_connected(namespace) else "disconnected"

    def close(self) -> None:
        for ns, connected in list(self.client.connected.items()):
            if connected:
                self.client.disconnect(ns)


class NetworkPeer(Peer):
    """Through the python-socketio client, over 127.0.0.1."""

    kind = "network"

    def __init__(
        self,
        url: str,
        sio: Any,
        namespaces: tuple[str, ...] = ("/",),
        auth: Any = None,
        headers: dict[str, str] | None = None,
        query: str | None = None,
        transports: list[str] | None = None,
        wait_timeout: float = 10,
    ) -> None:
        import socketio

        self.sio = sio
        self.client = socketio.Client(reconnection=False, handle_sigint=False)
        self._lock = threading.Lock()
        self._events: dict[str, list[tuple[str, list[Any]]]] = {}
        self._errors: dict[str, Any] = {}
        self._reasons: dict[str, str] = {}
        self._handlers: dict[tuple[str, str], Any] = {}
        for ns in namespaces:
            self.client.on("*", functools.partial(self._on_any, ns), namespace=ns)
            self.client.on("connect_error", functools.partial(self._on_error, ns), namespace=ns)
            self.client.on("disconnect", functools.partial(self._on_disconnect, ns), namespace=ns)
        if query:
            url += "?" + query.lstrip("?")
        try:
            self.client.connect(
                url,
                headers=headers or {},
                auth=auth,
                namespaces=list(namespaces),
                transports=transports,
                wait_timeout=wait_timeout,
            )
        except socketio.exceptions.ConnectionError:
            pass
        for ns in namespaces:
            if self.connected(ns) and SYNC_EVENT not in sio.handlers.get(ns, {}):
                sio.on(SYNC_EVENT, namespace=ns)(_sync_handler)

    def _on_any(self, namespace: str, event: str, *args: Any) -> Any:
        with self._lock:
            self._events.setdefault(namespace, []).append((event, list(args)))
            handler = self._handlers.get((namespace, event))
        if handler is not None:
            return handler(*args)
        return None

    def _on_error(self, namespace: str, data: Any = None) -> None:
        with self._lock:
            self._errors[namespace] = data

    def _on_disconnect(self, namespace: str, *args: Any) -> None:
        with self._lock:
            self._reasons[namespace] = args[0] if args else "disconnected"

    def connected(self, namespace: str = "/") -> bool:
        return self.client.connected and namespace in self.client.namespaces

    def connect_error(self, namespace: str = "/") -> Any:
        return self._errors.get(namespace)

    def sid(self, namespace: str = "/") -> str | None:
        sid: str | None = self.client.get_sid(namespace)
        return sid

    @staticmethod
    def _data(args: tuple[Any, ...]) -> Any:
        if not args:
            return None
        if len(args) == 1:
            assert not isinstance(args[0], tuple)
            return args[0]
        return args

    def emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        self.client.emit(event, self._data(args), namespace=namespace)

    def ask(self, event: str, *args: Any, namespace: str = "/") -> list[Any]:
        done = threading.Event()
        result: list[Any] = []

        def callback(*ack: Any) -> None:
            result.extend(ack)
            done.set()

        self.client.emit(event, self._data(args), namespace=namespace, callback=callback)
        assert done.wait(10), "no acknowledgement"
        return result

    def on(self, event: str, handler: Any, namespace: str = "/") -> None:
        with self._lock:
            self._handlers[(namespace, event)] = handler

    def sync(self, namespace: str = "/") -> None:
        assert self.ask(SYNC_EVENT, namespace=namespace) == ["synced"]

    def take(self, namespace: str = "/") -> list[tuple[str, list[Any]]]:
        self.sync(namespace)
        with self._lock:
            items = self._events.pop(namespace, [])
        return [item for item in items if item[0] != SYNC_EVENT]

    def wait_for(self, name: str, namespace: str = "/", count: int = 1) -> list[list[Any]]:
        def arrived() -> bool:
            with self._lock:
                return sum(1 for n, _ in self._events.get(namespace, []) if n == name) >= count

        wait_until(arrived, what=f"{count} {name!r} events")
        with self._lock:
            items = self._events.pop(namespace, [])
        return [args for n, args in items if n == name]

    def disconnected_reason(self, namespace: str = "/") -> str | None:
        return self._reasons.get(namespace)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.shutdown() if hasattr(self.client, "shutdown") else None
