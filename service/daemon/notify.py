"""systemd's notify protocol: one datagram per message to ``$NOTIFY_SOCKET``.

A few lines of the standard library (``sd_notify(3)``): the socket is a path, or an abstract
name when it starts with ``@``. Outside systemd (no ``$NOTIFY_SOCKET``) every call does
nothing, so the daemon runs the same in a terminal.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import timedelta

from service.logs import get_logger

log = get_logger("lopper.daemon")


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        if address:
            # An abstract socket is named with a leading NUL byte; systemd writes it as "@".
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False when nobody listens."""
        if self._socket is None or self._address is None:
            return False
        payload = "\n".join(lines).encode("utf-8")
        with self._lock:
            try:
                self._socket.sendto(payload, self._address)
            except OSError as exc:
                log.warning("systemd notification not delivered", error=str(exc))
                return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1", "STATUS=reloading the configuration")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval() -> timedelta | None:
    """Half the watchdog timeout systemd asks for (``WatchdogSec=``), if it asks for one.

    ``WATCHDOG_PID`` names the process meant; a child that inherited the variables ignores it.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return timedelta(microseconds=value / 2)
