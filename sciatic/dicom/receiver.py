"""DICOM C-STORE receiver (SCP) that writes what it receives into the drop folder.

Each instance is written exactly as the sender encoded it (file meta added,
dataset bytes untouched) to a hidden temporary file in the drop folder, fsynced
and then linked to ``<SOPInstanceUID>.dcm``, so ingest (which never reads
names starting with ``.``) only ever sees whole files. pynetdicom hands an
instance over only once all its fragments have arrived: a sender that aborts
or disconnects mid-transfer leaves nothing behind. An instance sent twice is
kept twice (``<uid>.1.dcm``); ingest records the second as a duplicate.

The receiver faces the hospital network, so nothing a peer does may hold its
resources for long:

* A connection has ``request_timeout`` seconds to send its A-ASSOCIATE-RQ
  (pynetdicom's ACSE timeout, which also drives the ARTIM timer that closes
  the socket). Only associations that have asked count against
  ``max_associations``: the receiver keeps its own slots, taken when an
  A-ASSOCIATE-RQ is accepted for negotiation and given back when the
  association ends, because pynetdicom's own limit counts every connection
  thread, idle sockets included. A-ASSOCIATE-RJ "local limit exceeded"
  (transient) answers a request beyond the limit.
* An association silent for ``idle_timeout`` seconds is aborted (pynetdicom's
  network timeout), and a PDU that stops arriving half-way is given up after
  the same time (a socket timeout).
* A dataset may be at most ``max_dataset_bytes``. pynetdicom buffers a
  dataset in memory until its last fragment; once the P-DATA received for one
  instance passes the limit, the rest is counted but not kept, and the
  instance is answered 0xA700 (Out of Resources) without writing anything. A
  single PDU longer than the limit (plus 1 MiB) closes the connection.
* The called AE title must be the receiver's own (A-ASSOCIATE-RJ "called AE
  title not recognised").
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.uid import UID, EnhancedMRImageStorage, MRImageStorage
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_context, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu import P_DATA_TF

from sciatic.storage import fsync_directory

log = logging.getLogger(__name__)

DEFAULT_PORT = 11112
DEFAULT_AE_TITLE = "SCIATIC"
DEFAULT_MAX_ASSOCIATIONS = 4
DEFAULT_REQUEST_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_DATASET_BYTES = 256 * 1024**2
STORAGE_SOP_CLASSES = (MRImageStorage, EnhancedMRImageStorage)
VERIFICATION_SOP_CLASS = UID("1.2.840.10008.1.1")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000

# A-ASSOCIATE-RJ result, source, reason (PS3.8 9.3.4): rejected transient,
# service provider (presentation related), local limit exceeded
_REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)
# A PDU may carry a whole dataset; this much more leaves room for the command set and item headers.
_PDU_ALLOWANCE = 1024**2
# pynetdicom's own association limit counts every connection thread, idle ones included; the
# receiver counts slots itself and leaves pynetdicom a ceiling this much higher, on connections only.
_CONNECTION_CEILING = 1024

_UID_PATTERN = re.compile(r"^[0-9][0-9.]{0,63}$")
_MAX_NAME_ATTEMPTS = 1000


@dataclass
class _AssociationStats:
    calling_ae: str
    peer: str
    started: float
    instances: int = 0
    failures: int = 0
    logged: bool = False
    dataset_bytes: int = 0  # P-DATA of the dataset in transit (the DUL thread's count)


@dataclass
class ReceiverStats:
    """Counters since the receiver started (read them with the handle's lock held)."""

    associations: int = 0
    rejected: int = 0
    instances: int = 0
    failures: int = 0
    too_large: int = 0
    idle_closed: int = 0


class _DiscardedDataset(BytesIO):
    """Takes the place of the buffer of a dataset over the limit: counts what arrives, keeps nothing."""

    def __init__(self, received: int) -> None:
        super().__init__()
        self.received = received

    def write(self, data: Any, /) -> int:
        size = memoryview(data).nbytes
        self.received += size
        return size


class Receiver:
    """A running C-STORE SCP; ``shutdown()`` stops it (``with`` does too)."""

    def __init__(
        self,
        ae: AE,
        drop_dir: Path,
        ae_title: str,
        allowed_calling: tuple[str, ...],
        port: int,
        *,
        max_associations: int = DEFAULT_MAX_ASSOCIATIONS,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    ) -> None:
        self.ae = ae
        self.drop_dir = drop_dir
        self.ae_title = ae_title
        self.allowed_calling = allowed_calling
        self.port = port
        self.max_associations = max_associations
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_dataset_bytes = max_dataset_bytes
        self.stats = ReceiverStats()
        self._lock = threading.Lock()
        self._associations: dict[int, _AssociationStats] = {}
        self._connections: dict[int, tuple[float, Any]] = {}  # id(assoc) -> (accepted when, association)
        self._slots: dict[int, Any] = {}  # id(assoc) -> association holding one of max_associations
        self._server: Any = None

    # ----------------------------------------------------------------- lifecycle

    def shutdown(self) -> None:
        """Stop listening and end the associations in progress."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.ae.shutdown()
        log.info("DICOM receiver %s on port %d stopped", self.ae_title, self.port)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def slots_in_use(self) -> int:
        """Associations that hold one of the ``max_associations`` slots now."""
        with self._lock:
            self._prune_slots()
            return len(self._slots)

    # ----------------------------------------------------------------- handlers

    def handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_PDU_RECV, self._on_pdu),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]

    def _on_connection(self, event: Any) -> None:
        """A TCP connection: note the time, and bound how long and how large one PDU may be."""
        assoc = event.assoc
        with self._lock:
            # forget connections whose thread has ended without EVT_CONN_CLOSE (none should)
            for key in [k for k, (_, a) in self._connections.items() if a.ident is not None and not a.is_alive()]:
                del self._connections[key]
            self._connections[id(assoc)] = (time.monotonic(), assoc)
        sock = assoc.dul.socket
        if sock is None or sock.socket is None:
            return
        # pynetdicom reads a PDU's body in one blocking recv loop without a timeout: a peer that
        # stops half-way would hold the connection for ever. Until the association request has
        # arrived the request timeout applies, then the idle timeout (see _on_requested).
        raw = sock.socket
        raw.settimeout(min(self.request_timeout, self.idle_timeout))
        receive = sock.recv
        limit = self.max_dataset_bytes + _PDU_ALLOWANCE
        peer = _peer(event)

        given_up = threading.Event()

        def give_up() -> bytearray:
            # a short read: pynetdicom takes the connection as closed; nothing more is read from it
            given_up.set()
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RD)
            return bytearray()

        def guarded_recv(nr_bytes: int) -> bytearray:
            if given_up.is_set():
                return bytearray()
            if nr_bytes > limit:
                log.error(
                    "closing the connection from %s: it announced a PDU of %d bytes, over the limit of %d bytes",
                    peer,
                    nr_bytes,
                    limit,
                )
                return give_up()
            try:
                data: bytearray = receive(nr_bytes)
            except TimeoutError:
                log.warning(
                    "closing the connection from %s: a PDU stopped arriving (nothing for %g s)", peer, raw.gettimeout()
                )
                return give_up()
            return data

        # the AssociationSocket of this one connection only; pynetdicom offers no hook before a PDU is read
        setattr(sock, "recv", guarded_recv)  # noqa: B010

    def _on_requested(self, event: Any) -> None:
        _prefer_senders_syntaxes(event)
        assoc = event.assoc
        sock = assoc.dul.socket
        if sock is not None and sock.socket is not None:
            sock.socket.settimeout(self.idle_timeout)
        calling = _calling_ae(event)
        called = _called_ae(event)
        if called != self.ae_title.strip():
            # pynetdicom itself sends the A-ASSOCIATE-RJ (called AE title not recognised)
            self._count_rejected()
            log.warning(
                "rejecting association from %s (%s): called AE title %r is not this receiver's (%s)",
                calling,
                _peer(event),
                called,
                self.ae_title,
            )
            return
        if self.allowed_calling and calling not in self.allowed_calling:
            # pynetdicom itself sends the A-ASSOCIATE-RJ (calling AE title not recognised)
            self._count_rejected()
            log.warning(
                "rejecting association from %s: calling AE title %r is not allowed (allowed: %s)",
                _peer(event),
                calling,
                ", ".join(self.allowed_calling),
            )
            return
        connections = sum(1 for a in self.ae.active_associations if a.is_acceptor)
        if connections > self.ae.maximum_associations:
            # pynetdicom itself sends the A-ASSOCIATE-RJ (local limit exceeded)
            self._count_rejected()
            log.warning(
                "rejecting association from %s (%s): %d connections open, the ceiling is %d",
                calling,
                _peer(event),
                connections - 1,
                self.ae.maximum_associations,
            )
            return
        with self._lock:
            self._prune_slots()
            active = len(self._slots)
            full = active >= self.max_associations
            if full:
                self.stats.rejected += 1
            else:
                self._slots[id(assoc)] = assoc
        if full:
            log.warning(
                "rejecting association from %s (%s): %d associations already open, the limit is %d",
                calling,
                _peer(event),
                active,
                self.max_associations,
            )
            assoc.acse.send_reject(*_REJECT_LOCAL_LIMIT)
            # as pynetdicom does after its own rejections: wait until the A-ASSOCIATE-RJ has gone out
            # and the connection is closed (by the peer, or by the ARTIM timer)
            assoc.kill()

    def _on_accepted(self, event: Any) -> None:
        with self._lock:
            self.stats.associations += 1
            self._associations[id(event.assoc)] = _AssociationStats(_calling_ae(event), _peer(event), time.monotonic())
        log.info("association from %s (%s) accepted", _calling_ae(event), _peer(event))

    def _on_rejected(self, event: Any) -> None:
        with self._lock:
            self._slots.pop(id(event.assoc), None)

    def _on_pdu(self, event: Any) -> None:
        """Count the dataset bytes of each P-DATA-TF; past the limit, stop buffering the instance.

        Runs in the association's DUL thread just before pynetdicom adds the
        PDU's fragments to the DIMSE message it is assembling, so the buffer
        swapped here receives the fragment that crossed the limit and all after it.
        """
        pdu = event.pdu
        if not isinstance(pdu, P_DATA_TF):
            return
        stats = self._association(event)
        if stats is None:
            return
        for item in pdu.presentation_data_value_items:
            value = item.presentation_data_value
            if not value or value[0] & 0x01:  # a command fragment
                continue
            stats.dataset_bytes += len(value) - 1
            if stats.dataset_bytes > self.max_dataset_bytes:
                _stop_buffering(event.assoc)
            if value[0] & 0x02:  # the last fragment of the dataset
                stats.dataset_bytes = 0

    def _on_echo(self, event: Any) -> int:
        log.info("C-ECHO from %s (%s)", _calling_ae(event), _peer(event))
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> int:
        stats = self._association(event)
        calling = stats.calling_ae if stats else _calling_ae(event)
        sop_uid = str(event.request.AffectedSOPInstanceUID or "").strip()
        buffer = event.request.DataSet
        if not isinstance(buffer, BytesIO):
            log.error(
                "refused instance %s from %s (%s): the C-STORE carried no dataset", sop_uid, calling, _peer(event)
            )
            self._count_failure(stats)
            return STATUS_CANNOT_UNDERSTAND
        size = _buffered_size(buffer)
        if size > self.max_dataset_bytes:
            log.error(
                "refused instance %s from %s (%s): its dataset of %d bytes is over the limit of %d bytes%s; "
                "nothing written (status 0xA700)",
                sop_uid,
                calling,
                _peer(event),
                size,
                self.max_dataset_bytes,
                " (discarded while receiving)" if isinstance(buffer, _DiscardedDataset) else "",
            )
            with self._lock:
                self.stats.too_large += 1
            self._count_failure(stats)
            return STATUS_OUT_OF_RESOURCES
        try:
            # the sender's bytes as they are, behind the file meta; the buffer is not copied
            meta = b"\x00" * 128 + b"DICM" + encode_file_meta(event.file_meta)
            with buffer.getbuffer() as view:
                path = write_instance(self.drop_dir, sop_uid, meta, view)
        except OSError as exc:  # the local disk, not the sender: they may retry
            log.error("cannot store an instance from %s: %s", calling, exc)
            self._count_failure(stats)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            self.stats.instances += 1
            if stats:
                stats.instances += 1
        log.debug("stored %s", path.name)
        return STATUS_SUCCESS

    def _on_end(self, event: Any) -> None:
        assoc = event.assoc
        with self._lock:
            self._slots.pop(id(assoc), None)
            connection = self._connections.pop(id(assoc), None) if event.event.name == "EVT_CONN_CLOSE" else None
            stats = self._associations.pop(id(assoc), None)
        if connection is not None and assoc.requestor.primitive is None:
            waited = time.monotonic() - connection[0]
            if waited >= self.request_timeout * 0.9:  # closed by us, not by a peer that only checked the port
                with self._lock:
                    self.stats.idle_closed += 1
                log.info(
                    "closed the connection from %s: no association request within %g s",
                    _peer(event),
                    self.request_timeout,
                )
        if stats is None or stats.logged:
            return
        stats.logged = True
        how = {
            "EVT_RELEASED": "released",
            "EVT_ABORTED": "aborted",
            "EVT_CONN_CLOSE": "connection closed",
        }.get(event.event.name, event.event.name)
        log.info(
            "association from %s (%s) %s: %d instance(s) stored, %d failed, %.1f s",
            stats.calling_ae,
            stats.peer,
            how,
            stats.instances,
            stats.failures,
            time.monotonic() - stats.started,
        )

    def _association(self, event: Any) -> _AssociationStats | None:
        with self._lock:
            return self._associations.get(id(event.assoc))

    def _count_rejected(self) -> None:
        with self._lock:
            self.stats.rejected += 1

    def _count_failure(self, stats: _AssociationStats | None) -> None:
        with self._lock:
            self.stats.failures += 1
            if stats:
                stats.failures += 1

    def _prune_slots(self) -> None:
        """Give back the slots of associations whose thread has ended (call with the lock held)."""
        for key in [key for key, assoc in self._slots.items() if not assoc.is_alive()]:
            del self._slots[key]


def serve(
    port: int = DEFAULT_PORT,
    ae_title: str = DEFAULT_AE_TITLE,
    drop_dir: str | os.PathLike[str] = "drop",
    allowed_calling: Sequence[str] | None = None,
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS,
    block: bool = True,
    host: str = "",
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    max_dataset_bytes: int = DEFAULT_MAX_DATASET_BYTES,
) -> Receiver:
    """Start the C-STORE SCP on ``host:port`` and return its handle.

    ``allowed_calling`` empty or ``None`` accepts any calling AE title; the
    called AE title must be ``ae_title``. ``request_timeout``: seconds a new
    connection may take to send its association request; ``idle_timeout``:
    seconds an association (or a PDU half-way) may stay silent;
    ``max_dataset_bytes``: the largest dataset accepted per instance.
    With ``block=True`` this returns only after the server has been shut down
    (Ctrl-C, or ``shutdown()`` from another thread); with ``block=False`` it
    returns at once with the running server.
    """
    if max_associations < 1 or request_timeout <= 0 or idle_timeout <= 0 or max_dataset_bytes < 1:
        raise ValueError(
            f"the receiver needs positive limits (max_associations={max_associations}, request_timeout="
            f"{request_timeout}, idle_timeout={idle_timeout}, max_dataset_bytes={max_dataset_bytes})"
        )
    drop = Path(drop_dir)
    drop.mkdir(parents=True, exist_ok=True)
    library_log = logging.getLogger("pynetdicom")
    if library_log.level == logging.NOTSET:  # its INFO is a line per PDU and instance; ours is one per association
        library_log.setLevel(logging.WARNING)
    allowed = tuple(a.strip() for a in (allowed_calling or ()) if a.strip())
    ae = AE(ae_title=ae_title)
    ae.maximum_associations = max_associations + _CONNECTION_CEILING  # see Receiver._on_requested
    ae.acse_timeout = request_timeout  # the A-ASSOCIATE-RQ must come within this (and ARTIM closes the socket)
    ae.network_timeout = idle_timeout
    ae.require_called_aet = True
    if allowed:
        ae.require_calling_aet = list(allowed)
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION_SOP_CLASS)
    receiver = Receiver(
        ae,
        drop,
        ae_title,
        allowed,
        port,
        max_associations=max_associations,
        request_timeout=request_timeout,
        idle_timeout=idle_timeout,
        max_dataset_bytes=max_dataset_bytes,
    )
    log.info(
        "DICOM receiver %s listening on port %d, writing to %s; calling AE titles: %s; at most %d associations; "
        "association request within %g s, idle timeout %g s, datasets up to %d bytes",
        ae_title,
        port,
        drop,
        ", ".join(allowed) if allowed else "any",
        max_associations,
        request_timeout,
        idle_timeout,
        max_dataset_bytes,
    )
    if block:
        try:
            ae.start_server((host, port), block=True, evt_handlers=receiver.handlers())
        except KeyboardInterrupt:
            log.info("interrupted")
        finally:
            ae.shutdown()
        return receiver
    receiver._server = ae.start_server((host, port), block=False, evt_handlers=receiver.handlers())
    return receiver


def instance_file_name(sop_instance_uid: str) -> str:
    """``<SOPInstanceUID>.dcm``, or a random name when the UID is not a valid UID."""
    if _UID_PATTERN.match(sop_instance_uid) and ".." not in sop_instance_uid:
        return f"{sop_instance_uid}.dcm"
    return f"received-{secrets.token_hex(8)}.dcm"


def write_instance(drop_dir: Path, sop_instance_uid: str, *chunks: bytes | memoryview) -> Path:
    """Write ``chunks`` one after the other atomically as ``drop_dir/<uid>.dcm`` (never overwriting).

    The bytes go to a hidden temporary file in ``drop_dir`` itself, are
    fsynced, then hard-linked to the final name (which fails instead of
    replacing an existing file) and the temporary name removed; the directory
    is fsynced last. Returns the path.
    """
    name = instance_file_name(sop_instance_uid)
    tmp = drop_dir / f".{name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "xb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        target = _link_unique(tmp, drop_dir, name)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(drop_dir)
    return target


def _link_unique(tmp: Path, directory: Path, name: str) -> Path:
    stem = name.removesuffix(".dcm")
    for attempt in range(_MAX_NAME_ATTEMPTS):
        target = directory / (name if attempt == 0 else f"{stem}.{attempt}.dcm")
        try:
            os.link(tmp, target)
        except FileExistsError:
            continue
        return target
    raise OSError(errno.EEXIST, f"{_MAX_NAME_ATTEMPTS} files named {stem}.*.dcm already wait in {directory}")


def _stop_buffering(assoc: Any) -> None:
    """Swap the dataset buffer of the DIMSE message being assembled for one that keeps nothing."""
    message = assoc.dimse.message
    if message is None or getattr(message, "_data_set_file", None) is not None:
        return  # nothing assembled yet (the next PDU swaps it), or pynetdicom spools to a file
    current = message.data_set
    if isinstance(current, BytesIO) and not isinstance(current, _DiscardedDataset):
        message.data_set = _DiscardedDataset(received=_buffered_size(current))


def _buffered_size(buffer: BytesIO) -> int:
    if isinstance(buffer, _DiscardedDataset):
        return buffer.received
    with buffer.getbuffer() as view:
        return view.nbytes


def _prefer_senders_syntaxes(event: Any) -> None:
    """Order each context's transfer syntaxes as the sender proposed them.

    pynetdicom accepts the first of the acceptor's syntaxes that the sender
    proposed; with the sender's order first, a file goes over the network in
    the syntax it is stored in and is written unchanged.
    """
    acceptor = event.assoc.acceptor
    primitive = event.assoc.requestor.primitive
    if primitive is None or not acceptor.writeable:
        return
    proposed = primitive.presentation_context_definition_list
    contexts = []
    for supported in acceptor.supported_contexts:
        order: list[str] = []
        for context in proposed:
            if context.abstract_syntax == supported.abstract_syntax:
                order += [s for s in context.transfer_syntax if s in supported.transfer_syntax and s not in order]
        order += [s for s in supported.transfer_syntax if s not in order]
        contexts.append(build_context(supported.abstract_syntax, order))
    acceptor.supported_contexts = contexts


def _calling_ae(event: Any) -> str:
    requestor = event.assoc.requestor
    # before negotiation only the A-ASSOCIATE-RQ primitive knows the calling AE title
    title = requestor.ae_title or (requestor.primitive.calling_ae_title if requestor.primitive else "")
    return str(title).strip()


def _called_ae(event: Any) -> str:
    primitive = event.assoc.requestor.primitive
    return str(primitive.called_ae_title if primitive else "").strip()


def _peer(event: Any) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.address}:{requestor.port}"
