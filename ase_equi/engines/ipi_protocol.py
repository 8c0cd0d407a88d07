"""The client side of i-PI's socket protocol: messages, and the arrays that follow them.

i-PI (the server) drives the exchange; the client answers. Every message starts with a
12-byte ASCII header, upper case, padded with spaces; numbers travel as native-endian int32
and float64 in atomic units (bohr, hartree), cells as i-PI's ``h`` matrix (the cell vectors
are its *columns*, sent in C order: ASE's cell is ``h.T``).

=============  ==============================================================================
server sends   client does
=============  ==============================================================================
``STATUS``     answers ``NEEDINIT`` (before ``INIT``), ``HAVEDATA`` (results waiting) or
               ``READY``
``INIT``       reads int32 bead index, int32 length, that many bytes of parameters; a
               ``batch_size:N`` token among the comma-separated parameters announces N
               structures per request (i-PI >= 3.3, ``<ffsocket><batch_size>``)
``POSDATA``    one structure: float64 ``h [3, 3]``, ``h⁻¹ [3, 3]``, int32 n, ``q [n, 3]``;
               batched (N > 1): int32 n, N × (``h``, ``h⁻¹``), then ``q [N, n, 3]``
``GETFORCE``   answers ``FORCEREADY``, then one structure: float64 V, int32 n, ``f [n, 3]``,
               ``virial [3, 3]``, int32 length and bytes of an "extras" string; batched:
               ``V [N]``, int32 n, ``f [N, n, 3]``, ``virial [N, 3, 3]``, then N × (int32
               length, bytes)
``EXIT``       the run is over: close
=============  ==============================================================================

Written from the protocol's description in i-PI's documentation and the message layout its
server reads; no i-PI code is used (the package is not needed to run a client).
"""

from __future__ import annotations

import posixpath
import socket
import time
from dataclasses import dataclass

import numpy as np

from ..errors import AseEquiError

__all__ = [
    "HEADER_BYTES",
    "IPI_SOCKETS_PREFIX",
    "IpiAddress",
    "IpiConnection",
    "batch_size_of",
    "header",
]

IPI_SOCKETS_PREFIX = posixpath.join("/tmp", "ipi_")
"""i-PI's default ``<simulation sockets_prefix>``: where its UNIX sockets live (fixed by i-PI,
the same on every machine)."""

HEADER_BYTES = 12
_INT = np.dtype("=i4")
_FLOAT = np.dtype("=f8")
MAX_BATCH = 4096
"""Largest ``batch_size`` accepted from i-PI (structures per request; a PIMD run has at most a
few hundred beads)."""
MAX_TEXT = 1 << 20
"""Largest ``INIT`` parameter string accepted (bytes)."""


def header(word: str) -> bytes:
    """The 12-byte header of ``word``.

    >>> header("ready")
    b'READY       '
    """
    return word.upper().ljust(HEADER_BYTES).encode("ascii")


def batch_size_of(parameters: str) -> int:
    """The structures per request announced in an ``INIT`` parameter string (1 if none).

    >>> batch_size_of("model=x, batch_size:8")
    8
    >>> batch_size_of("")
    1
    """
    for token in parameters.split(","):
        key, sep, value = token.partition(":")
        if sep and key.strip() == "batch_size":
            if not value.strip().isdigit():
                raise AseEquiError(f"i-PI announced batch_size {value.strip()!r}, not a number")
            size = int(value.strip())
            if not 1 <= size <= MAX_BATCH:
                raise AseEquiError(f"i-PI announced batch_size {size}; expected 1..{MAX_BATCH}")
            return size
    return 1


@dataclass(frozen=True)
class IpiAddress:
    """Where the i-PI server listens: a TCP ``host`` and ``port``, or a UNIX socket.

    A UNIX socket named ``NAME`` in i-PI's ``<ffsocket mode="unix"><address>NAME`` is the file
    ``sockets_prefix + NAME`` (i-PI's ``<simulation sockets_prefix>``, by default
    :data:`IPI_SOCKETS_PREFIX`).
    """

    host: str | None = None
    port: int | None = None
    unix: str | None = None
    sockets_prefix: str = IPI_SOCKETS_PREFIX

    @classmethod
    def parse(
        cls, address: str | None, unix: str | None, sockets_prefix: str | None = None
    ) -> IpiAddress:
        """From ``"HOST:PORT"`` or a UNIX socket name (exactly one of the two); ``None`` for
        ``sockets_prefix`` is i-PI's default.

        >>> IpiAddress.parse("node07:31415", None).port
        31415
        >>> IpiAddress.parse("31415", None)
        Traceback (most recent call last):
        ...
        ase_equi.errors.AseEquiError: address must be HOST:PORT with a port 1-65535, got '31415'
        """
        if (address is None) == (unix is None):
            raise AseEquiError("give exactly one of address='HOST:PORT' and unix='NAME'")
        if unix is not None:
            return cls(unix=unix, sockets_prefix=sockets_prefix or IPI_SOCKETS_PREFIX)
        host, sep, port = str(address).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise AseEquiError(f"address must be HOST:PORT with a port 1-65535, got {address!r}")
        return cls(host=host, port=int(port))

    def describe(self) -> str:
        return f"unix:{self.sockets_prefix}{self.unix}" if self.unix else f"{self.host}:{self.port}"

    def connect(self, wait: float) -> socket.socket:
        """A connected socket, retrying for up to ``wait`` seconds (the server may start
        after the client); ``ConnectionError`` naming the address when it never answers."""
        deadline = time.monotonic() + wait
        while True:
            if self.unix is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                target: str | tuple[str, int] = self.sockets_prefix + self.unix
            else:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                target = (str(self.host), int(self.port or 0))
            try:
                sock.connect(target)
                return sock
            except OSError as error:
                sock.close()
                if time.monotonic() >= deadline:
                    raise ConnectionError(
                        f"no i-PI server answered at {self.describe()} within {wait:g} s: {error}"
                    ) from None
                time.sleep(0.1)


class IpiConnection:
    """Reads and writes the protocol's headers and arrays on a connected socket.

    ``timeout`` (s, or ``None`` to wait forever) bounds each wait for the server: i-PI may
    leave a client idle while other clients compute, so the command line waits forever.
    """

    def __init__(self, sock: socket.socket, timeout: float | None = None) -> None:
        self.sock = sock
        sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    def _exact(self, nbytes: int) -> bytes:
        buffer = bytearray(nbytes)
        view, got = memoryview(buffer), 0
        while got < nbytes:
            n = self.sock.recv_into(view[got:], nbytes - got)
            if n == 0:
                raise ConnectionError("the i-PI server closed the connection")
            got += n
        return bytes(buffer)

    def read_header(self) -> str:
        """The next message's name, e.g. ``"POSDATA"``."""
        raw = self._exact(HEADER_BYTES)
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise AseEquiError(f"i-PI sent a header that is not ASCII: {raw!r}") from None

    def read_int(self) -> int:
        return int(np.frombuffer(self._exact(4), _INT)[0])

    def read_count(self, what: str, most: int) -> int:
        """An int32 that sizes what follows, refused outside ``0..most``."""
        value = self.read_int()
        if not 0 <= value <= most:
            raise AseEquiError(f"i-PI sent {what} = {value}; expected 0..{most}")
        return value

    def read_floats(self, *shape: int) -> np.ndarray:
        count = int(np.prod(shape))
        return np.frombuffer(self._exact(8 * count), _FLOAT).reshape(shape).copy()

    def read_text(self) -> str:
        n = self.read_count("a string length", MAX_TEXT)
        return self._exact(n).decode("utf-8", errors="replace")

    def send(self, *parts: bytes | np.ndarray | int | float) -> None:
        """Send headers (bytes), int32 (int), float64 (float) and arrays (as float64)."""
        chunks = []
        for part in parts:
            if isinstance(part, bytes):
                chunks.append(part)
            elif isinstance(part, int):
                chunks.append(np.asarray(part, _INT).tobytes())
            else:
                chunks.append(np.ascontiguousarray(part, _FLOAT).tobytes())
        self.sock.sendall(b"".join(chunks))
