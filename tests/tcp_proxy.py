"""A small TCP proxy the tests put between the gateway and MariaDB/Redis, to cut, blackhole
and restore a service without touching the machine's real one."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, delay_s: float = 0.0):
        self.target = (target_host, target_port)
        self.delay_s = delay_s  # added before each chunk travelling back: a slow server
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.blackholed = False  # connections accepted, nothing forwarded either way
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blackholed:  # hold it open, answer nothing
                with self._lock:
                    self._conns.append(client)
                continue
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)  # the 5 s were for connecting: idle links stay open
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.delay_s), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, delay_s: float = 0.0) -> None:
        import time

        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.blackholed:
                    continue  # swallowed: the peer waits for an answer that never comes
                if delay_s:
                    time.sleep(delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Refuse new connections and kill the open ones: the service looks dead."""
        self.up.clear()
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self._conns.clear()

    def blackhole(self) -> None:
        """Accept and keep connections, answer nothing (a hung server, a dropped route)."""
        self.blackholed = True

    def restore(self) -> None:
        """Back to forwarding. Connections opened during a cut or a blackhole are closed
        (their requests are long gone), as a real recovery would leave them."""
        if self.blackholed:
            self.blackholed = False
            self.cut()
        self.up.set()

    def close(self) -> None:
        self._stop = True
        self.cut()
        self.listener.close()
