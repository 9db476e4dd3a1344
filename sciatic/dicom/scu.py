"""C-STORE SCU: send DICOM files (a SEG, say) to a PACS node."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from sciatic.errors import SciaticError

log = logging.getLogger(__name__)

DEFAULT_CALLING_AE = "SCIATIC"
_WARNING_STATUSES = {0xB000, 0xB006, 0xB007}
_MAX_CONTEXTS = 128  # the DICOM limit of presentation contexts per association


class SendError(SciaticError):
    """No association could be made with the DICOM peer, or it ended before all files were sent.

    Recovery: check the peer's host, port and AE title (``SCIATIC_PACS_*``)
    and that the peer lists our calling AE title; ``echoscu -aet CALLING
    -aec CALLED HOST PORT`` tests the link. Sending again is safe: a PACS
    treats a re-sent SOP Instance UID as the same object.
    """


@dataclass
class SendReport:
    """Per file: sent (the peer answered success or a warning) or failed, with the reason."""

    sent: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def send(
    paths: Sequence[str | os.PathLike[str]],
    host: str,
    port: int,
    ae_title: str,
    calling_ae: str = DEFAULT_CALLING_AE,
    timeout: float = 30.0,
    on_result: Callable[[Path, str | None], None] | None = None,
) -> SendReport:
    """Send ``paths`` to ``ae_title`` at ``host:port`` over one association, each in its own transfer syntax.

    Raises ``SendError`` when the association is rejected or cannot be made;
    a file the peer does not take is listed, with the reason, in the report's
    ``failed``. ``on_result(path, reason)`` hears each file's outcome (reason
    None: stored) as soon as the peer answers, before the next file goes.
    """
    files = [Path(p) for p in paths]
    report = SendReport()
    if not files:
        return report
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntax in _contexts(files):
        if len(ae.requested_contexts) < _MAX_CONTEXTS:
            ae.add_requested_context(sop_class, syntax)  # one context per syntax: each file goes as it is stored
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        ae.shutdown()
        raise SendError(
            f"no association with {ae_title} at {host}:{port} (calling AE {calling_ae}): unreachable, "
            "rejected, or it accepts none of the SOP classes sent (pynetdicom's log says which)"
        )
    try:
        for path in files:
            reason = _send_one(assoc, path)
            if on_result is not None:
                on_result(path, reason)
            if reason is None:
                report.sent.append(path)
            else:
                report.failed.append((path, reason))
                log.error("%s did not take %s: %s", ae_title, path.name, reason)
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
    log.info("sent %d of %d file(s) to %s at %s:%d", len(report.sent), len(files), ae_title, host, port)
    return report


def _contexts(files: Sequence[Path]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs to propose: each file's own syntax, and the uncompressed ones."""
    pairs: list[tuple[str, str]] = []
    for path in files:
        meta = pydicom.dcmread(path, stop_before_pixels=True)
        own = str(meta.file_meta.TransferSyntaxUID)
        for syntax in (own, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            pair = (str(meta.SOPClassUID), str(syntax))
            if pair not in pairs and (syntax == own or not UID(own).is_compressed):
                pairs.append(pair)
    return pairs


def _send_one(assoc: Any, path: Path) -> str | None:
    """None when the peer stored the file, else why not."""
    if not assoc.is_established:
        return "the association ended before this file"
    try:
        status = assoc.send_c_store(path)
    except ValueError as exc:  # pynetdicom: no accepted presentation context for this SOP class / syntax
        return f"the peer accepts no presentation context for it ({exc})"
    if status is None or "Status" not in status:
        return "no response (timeout or aborted association)"
    code = int(status.Status)
    if code == 0 or code in _WARNING_STATUSES:
        return None
    return f"status 0x{code:04X}"
