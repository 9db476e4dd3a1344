"""DICOM C-STORE receiver (SCP) that writes what it receives into the drop folder.

Each instance is written exactly as the sender encoded it (file meta added,
dataset bytes untouched) to a hidden temporary file in the drop folder, fsynced
and then linked to ``<SOPInstanceUID>.dcm``, so ingest (which never reads
names starting with ``.``) only ever sees whole files. pynetdicom hands an
instance over only once all its fragments have arrived: a sender that aborts
or disconnects mid-transfer leaves nothing behind. An instance sent twice is
kept twice (``<uid>.1.dcm``); ingest records the second as a duplicate.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import UID, EnhancedMRImageStorage, MRImageStorage
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_context, evt
from pynetdicom.events import EventHandlerType

from sciatic.storage import fsync_directory

log = logging.getLogger(__name__)

DEFAULT_PORT = 11112
DEFAULT_AE_TITLE = "SCIATIC"
DEFAULT_MAX_ASSOCIATIONS = 4
STORAGE_SOP_CLASSES = (MRImageStorage, EnhancedMRImageStorage)
VERIFICATION_SOP_CLASS = UID("1.2.840.10008.1.1")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700

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


@dataclass
class ReceiverStats:
    """Counters since the receiver started (read them with the handle's lock held)."""

    associations: int = 0
    rejected: int = 0
    instances: int = 0
    failures: int = 0


class Receiver:
    """A running C-STORE SCP; ``shutdown()`` stops it (``with`` does too)."""

    def __init__(self, ae: AE, drop_dir: Path, ae_title: str, allowed_calling: tuple[str, ...], port: int) -> None:
        self.ae = ae
        self.drop_dir = drop_dir
        self.ae_title = ae_title
        self.allowed_calling = allowed_calling
        self.port = port
        self.stats = ReceiverStats()
        self._lock = threading.Lock()
        self._associations: dict[int, _AssociationStats] = {}
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

    # ----------------------------------------------------------------- handlers

    def handlers(self) -> list[EventHandlerType]:
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_end),
            (evt.EVT_ABORTED, self._on_end),
            (evt.EVT_CONN_CLOSE, self._on_end),
        ]

    def _on_requested(self, event: Any) -> None:
        _prefer_senders_syntaxes(event)
        calling = _calling_ae(event)
        if self.allowed_calling and calling not in self.allowed_calling:
            # pynetdicom itself sends the A-ASSOCIATE-RJ (calling AE title not recognised)
            with self._lock:
                self.stats.rejected += 1
            log.warning(
                "rejecting association from %s: calling AE title %r is not allowed (allowed: %s)",
                _peer(event),
                calling,
                ", ".join(self.allowed_calling),
            )
            return
        active = sum(1 for assoc in self.ae.active_associations if assoc.is_acceptor)
        if active > self.ae.maximum_associations:
            log.warning(
                "rejecting association from %s (%s): %d associations already open, the limit is %d",
                calling,
                _peer(event),
                active - 1,
                self.ae.maximum_associations,
            )

    def _on_accepted(self, event: Any) -> None:
        with self._lock:
            self.stats.associations += 1
            self._associations[id(event.assoc)] = _AssociationStats(_calling_ae(event), _peer(event), time.monotonic())
        log.info("association from %s (%s) accepted", _calling_ae(event), _peer(event))

    def _on_echo(self, event: Any) -> int:
        log.info("C-ECHO from %s (%s)", _calling_ae(event), _peer(event))
        return STATUS_SUCCESS

    def _on_store(self, event: Any) -> int:
        stats = self._association(event)
        try:
            raw: bytes = event.encoded_dataset(include_meta=True)
            sop_uid = str(event.request.AffectedSOPInstanceUID or "").strip()
            path = write_instance(self.drop_dir, sop_uid, raw)
        except OSError as exc:  # the local disk, not the sender: they may retry
            log.error("cannot store an instance from %s: %s", stats.calling_ae if stats else "?", exc)
            with self._lock:
                self.stats.failures += 1
                if stats:
                    stats.failures += 1
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            self.stats.instances += 1
            if stats:
                stats.instances += 1
        log.debug("stored %s", path.name)
        return STATUS_SUCCESS

    def _on_end(self, event: Any) -> None:
        with self._lock:
            stats = self._associations.pop(id(event.assoc), None)
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


def serve(
    port: int = DEFAULT_PORT,
    ae_title: str = DEFAULT_AE_TITLE,
    drop_dir: str | os.PathLike[str] = "drop",
    allowed_calling: Sequence[str] | None = None,
    max_associations: int = DEFAULT_MAX_ASSOCIATIONS,
    block: bool = True,
    host: str = "",
) -> Receiver:
    """Start the C-STORE SCP on ``host:port`` and return its handle.

    ``allowed_calling`` empty or ``None`` accepts any calling AE title.
    With ``block=True`` this returns only after the server has been shut down
    (Ctrl-C, or ``shutdown()`` from another thread); with ``block=False`` it
    returns at once with the running server.
    """
    drop = Path(drop_dir)
    drop.mkdir(parents=True, exist_ok=True)
    library_log = logging.getLogger("pynetdicom")
    if library_log.level == logging.NOTSET:  # its INFO is a line per PDU and instance; ours is one per association
        library_log.setLevel(logging.WARNING)
    allowed = tuple(a.strip() for a in (allowed_calling or ()) if a.strip())
    ae = AE(ae_title=ae_title)
    ae.maximum_associations = max_associations
    if allowed:
        ae.require_calling_aet = list(allowed)
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(VERIFICATION_SOP_CLASS)
    receiver = Receiver(ae, drop, ae_title, allowed, port)
    log.info(
        "DICOM receiver %s listening on port %d, writing to %s; calling AE titles: %s; at most %d associations",
        ae_title,
        port,
        drop,
        ", ".join(allowed) if allowed else "any",
        max_associations,
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


def write_instance(drop_dir: Path, sop_instance_uid: str, data: bytes) -> Path:
    """Write ``data`` atomically as ``drop_dir/<uid>.dcm`` (never overwriting); return the path.

    The bytes go to a hidden temporary file in ``drop_dir`` itself, are
    fsynced, then hard-linked to the final name (which fails instead of
    replacing an existing file) and the temporary name removed; the directory
    is fsynced last.
    """
    name = instance_file_name(sop_instance_uid)
    tmp = drop_dir / f".{name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
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


def _peer(event: Any) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.address}:{requestor.port}"
