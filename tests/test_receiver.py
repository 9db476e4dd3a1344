"""The DICOM receiver against real peers: dcmtk's storescu/echoscu, and a sender that quits mid-transfer."""

from __future__ import annotations

import logging
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, RLELossless, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from sciatic.config import get_settings
from sciatic.db import migrate
from sciatic.db.enums import SeriesStatus
from sciatic.db.models import Series
from sciatic.db.session import default_engine
from sciatic.dicom.receiver import Receiver, serve, write_instance
from sciatic.imaging.volume import read_volume
from sciatic.steps.ingest import run_pass
from tests._dicom_synthetic import mr_dataset, oblique, save, slice_pixels, stack_positions, write_stack

LOGGER = "sciatic.dicom.receiver"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's dcmtk (`apt-get install dcmtk`, done by `make install`)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def start_receiver(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    """Start receivers on free ports; every one is shut down after the test."""
    started: list[Receiver] = []

    def start(drop: Path | None = None, **kwargs: Any) -> Receiver:
        receiver = serve(
            port=free_port(), ae_title="SCIATIC", drop_dir=drop or tmp_path / "drop", block=False, **kwargs
        )
        started.append(receiver)
        return receiver

    try:
        yield start
    finally:
        for receiver in started:
            receiver.shutdown()


def _storescu(receiver: Receiver, files: list[Path], calling: str = "MODALITY") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # -xr: propose RLE Lossless besides the uncompressed syntaxes, so every file travels as it is
        [_tool("storescu"), "-xr", "-aet", calling, "-aec", receiver.ae_title, "127.0.0.1", str(receiver.port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its file meta group (needs the group length element)."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack("<L", raw[140:144])
    return raw[144 + group_length :]


def _visible(drop: Path) -> list[Path]:
    return sorted(drop.iterdir())


def _wait_idle(receiver: Receiver, timeout: float = 20.0) -> None:
    """Wait until the receiver has logged the end of every association."""
    deadline = time.monotonic() + timeout
    while receiver._associations or any(a.is_acceptor for a in receiver.ae.active_associations):
        if time.monotonic() > deadline:
            pytest.fail("the receiver still has associations open")
        time.sleep(0.05)


def _rle_stack(directory: Path) -> list[Path]:
    """A compressed (RLE Lossless) series, sent as is."""
    uid = generate_uid()
    orientation = oblique((0.1, 0.2, 0.3))
    positions = stack_positions(orientation, (5.0, -3.0, 20.0), 2.5, 4)
    paths = []
    for k, position in enumerate(positions):
        ds = mr_dataset(
            slice_pixels(16, 12, k), series_uid=uid, orientation=orientation, position=position, instance_number=k + 1
        )
        ds.compress(RLELossless, generate_instance_uid=False)
        paths.append(save(ds, directory / f"rle{k}.dcm"))
    return paths


def test_storescu_study_arrives_byte_for_byte_and_ingests(
    start_receiver: Callable[..., Receiver],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("SCIATIC_SERIES_QUIET_SECONDS", "0")
    monkeypatch.setenv("SCIATIC_FILE_SETTLE_SECONDS", "0")
    get_settings.cache_clear()
    settings = get_settings()
    caplog.set_level(logging.INFO, logger=LOGGER)
    sent = write_stack(tmp_path / "plain", count=6, rows=24, columns=20) + _rle_stack(tmp_path / "rle")
    receiver = start_receiver(settings.dir("drop"), allowed_calling=["MODALITY"])

    result = _storescu(receiver, sent)
    assert result.returncode == 0, result.stdout + result.stderr
    _wait_idle(receiver)

    drop = settings.dir("drop")
    received = {pydicom.dcmread(p).SOPInstanceUID: p for p in _visible(drop)}
    assert len(received) == len(sent) and receiver.stats.instances == len(sent)
    for original in sent:
        ds = pydicom.dcmread(original)
        path = received[ds.SOPInstanceUID]
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        copy = pydicom.dcmread(path)
        assert copy.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert _dataset_bytes(path) == _dataset_bytes(original)  # byte for byte, compressed ones too
        assert copy.PixelData == ds.PixelData
        np.testing.assert_array_equal(copy.pixel_array, ds.pixel_array)
    assert any(
        "association from MODALITY" in r.message and f"{len(sent)} instance(s) stored" in r.message
        for r in caplog.records
    ), caplog.text

    migrate.upgrade(settings.effective_database_url)
    report = run_pass(settings, default_engine())
    assert len(report.converted) == 2 and report.quarantined == 0, report.summary()
    assert _visible(drop) == []
    with default_engine().connect() as connection:
        rows = connection.execute(sa.select(Series.status, Series.volume_path, Series.n_slices)).all()
    assert sorted(r.n_slices for r in rows) == [4, 6] and {r.status for r in rows} == {SeriesStatus.CONVERTED}
    for row in rows:
        assert read_volume(row.volume_path).shape[2] == row.n_slices


def test_echoscu_is_answered(start_receiver: Callable[..., Receiver]) -> None:
    receiver = start_receiver()
    result = subprocess.run(
        [_tool("echoscu"), "-aet", "ANY", "-aec", "SCIATIC", "127.0.0.1", str(receiver.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_calling_ae_is_rejected_at_association(
    start_receiver: Callable[..., Receiver], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sent = write_stack(tmp_path / "src", count=2)
    receiver = start_receiver(allowed_calling=["PACS", "MODALITY"])
    result = _storescu(receiver, sent, calling="INTRUDER")
    assert result.returncode != 0
    assert "reject" in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    assert _visible(receiver.drop_dir) == []
    assert receiver.stats.rejected == 1 and receiver.stats.associations == 0
    assert any("calling AE title 'INTRUDER' is not allowed" in r.message for r in caplog.records), caplog.text
    # an allowed title still gets in
    assert _storescu(receiver, sent, calling="PACS").returncode == 0


def _echoscu(receiver: Receiver, calling: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("echoscu"), "-aet", calling, "-aec", receiver.ae_title, "127.0.0.1", str(receiver.port)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_association_limit(start_receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = start_receiver(max_associations=1)
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context("1.2.840.10008.1.1")
    held = ae.associate("127.0.0.1", receiver.port, ae_title="SCIATIC")
    try:
        assert held.is_established
        result = _echoscu(receiver, "SECOND")
        assert result.returncode != 0
        assert "local limit exceeded" in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
        assert any("the limit is 1" in r.message for r in caplog.records), caplog.text
    finally:
        held.release()
        ae.shutdown()
    # the released association gave its slot back
    assert _echoscu(receiver, "SECOND").returncode == 0
    _wait_idle(receiver)
    assert receiver.slots_in_use == 0


def _acceptors(receiver: Receiver) -> int:
    return sum(1 for a in receiver.ae.active_associations if a.is_acceptor)


def _closed_at(conn: socket.socket, timeout: float) -> float:
    """When the server closed ``conn`` (it must within ``timeout`` seconds, sending nothing)."""
    conn.settimeout(timeout)
    try:
        data = conn.recv(64)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        pytest.fail(f"the receiver left the connection open for more than {timeout} s")
    assert data == b"", data
    return time.monotonic()


def test_idle_connections_hold_no_slot_and_are_closed(
    start_receiver: Callable[..., Receiver], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    request_timeout = 4.0
    receiver = start_receiver(max_associations=2, request_timeout=request_timeout)
    sent = write_stack(tmp_path / "src", count=3)
    idle: list[tuple[socket.socket, float]] = []
    try:
        for _ in range(10):  # more than the limit: each would have held a slot until pynetdicom's 30 s
            idle.append((socket.create_connection(("127.0.0.1", receiver.port), timeout=10), time.monotonic()))
            deadline = time.monotonic() + 10
            while _acceptors(receiver) < len(idle):  # accepted, and waiting for an association request
                assert time.monotonic() < deadline, "the receiver does not accept connections"
                time.sleep(0.01)

        start = time.monotonic()
        result = _storescu(receiver, sent)
        stored = time.monotonic()
        assert result.returncode == 0, result.stdout + result.stderr
        assert stored - start < 5.0
        assert len(_visible(receiver.drop_dir)) == len(sent)

        for conn, opened in idle:
            closed = _closed_at(conn, request_timeout + 10)
            assert closed >= stored, "an idle connection was closed before the sender had stored"
            assert closed - opened < request_timeout + 2.0
    finally:
        for conn, _ in idle:
            conn.close()
    _wait_idle(receiver)
    timeouts = [r for r in caplog.records if f"no association request within {request_timeout:g} s" in r.message]
    assert len(timeouts) == len(idle) and receiver.stats.idle_closed == len(idle), caplog.text
    assert receiver.stats.associations == 1 and receiver.stats.rejected == 0 and receiver.slots_in_use == 0


def test_oversized_or_stalled_pdu_closes_the_connection(
    start_receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = start_receiver(max_dataset_bytes=4096, request_timeout=1.0, idle_timeout=30.0)
    # a PDU header that announces 2 GiB: refused before any of it is buffered
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as huge:
        huge.sendall(b"\x01\x00" + struct.pack(">L", 2**31) + b"\x00" * 64)
        start = time.monotonic()
        assert _closed_at(huge, 10) - start < 2.0
    # half an association request, then silence: closed after the request timeout, not the idle one
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as stalled:
        stalled.sendall(b"\x01\x00" + struct.pack(">L", 200) + b"\x00\x01")
        start = time.monotonic()
        assert _closed_at(stalled, 10) - start < 1.0 + 2.0
    _wait_idle(receiver)
    messages = [r.message for r in caplog.records if r.name == LOGGER]
    assert any(f"PDU of {2**31} bytes, over the limit of {4096 + 1024**2} bytes" in m for m in messages), messages
    assert any("a PDU stopped arriving (nothing for 1 s)" in m for m in messages), messages
    assert _echoscu(receiver, "AFTER").returncode == 0


def test_pdu_stalling_in_an_association_is_given_up_after_the_idle_timeout(
    start_receiver: Callable[..., Receiver], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = start_receiver(request_timeout=10.0, idle_timeout=1.0)
    path = write_stack(tmp_path / "src", count=1)[0]
    ae = AE(ae_title="SLOW")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="SCIATIC")
    try:
        assert assoc.is_established
        request = C_STORE()
        request.MessageID = 1
        request.AffectedSOPClassUID = MRImageStorage
        request.AffectedSOPInstanceUID = generate_uid()
        request.Priority = 2
        request.DataSet = BytesIO(_dataset_bytes(path))
        message = C_STORE_RQ()
        message.primitive_to_message(request)
        context_id = assoc.accepted_contexts[0].context_id
        assert context_id is not None
        pdu = P_DATA_TF()
        pdu.from_primitive(next(iter(message.encode_msg(context_id, 16384))))
        encoded = pdu.encode()
        assert assoc.dul.socket is not None
        assoc.dul.socket.send(encoded[: len(encoded) // 2])  # and the rest never comes
        deadline = time.monotonic() + 1.0 + 3.0
        while not assoc.is_aborted:
            assert time.monotonic() < deadline, "the receiver waits for ever for the rest of the PDU"
            time.sleep(0.05)
    finally:
        ae.shutdown()
    _wait_idle(receiver)
    assert any("a PDU stopped arriving (nothing for 1 s)" in r.message for r in caplog.records), caplog.text
    assert any("association from SLOW" in r.message and "0 instance(s)" in r.message for r in caplog.records)
    assert list(receiver.drop_dir.iterdir()) == []


def test_wrong_called_ae_title_is_rejected(
    start_receiver: Callable[..., Receiver], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sent = write_stack(tmp_path / "src", count=2)
    receiver = start_receiver()
    result = subprocess.run(
        [_tool("storescu"), "-aet", "MODALITY", "-aec", "WRONG", "127.0.0.1", str(receiver.port)]
        + [str(f) for f in sent],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "called ae title not recognized" in output.lower(), output
    assert list(receiver.drop_dir.iterdir()) == []
    assert receiver.stats.rejected == 1 and receiver.stats.associations == 0
    assert any(
        "called AE title 'WRONG' is not this receiver's (SCIATIC)" in r.message and r.levelno == logging.WARNING
        for r in caplog.records
    ), caplog.text
    # its own title gets in
    assert _storescu(receiver, sent).returncode == 0


def test_dataset_over_the_limit_is_refused_while_it_arrives(
    start_receiver: Callable[..., Receiver], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    big = write_stack(tmp_path / "big", count=1, rows=256, columns=256)  # 128 KiB of pixels: several PDUs
    small = write_stack(tmp_path / "small", count=1, rows=16, columns=16)
    limit = 16 * 1024
    receiver = start_receiver(max_dataset_bytes=limit)
    result = subprocess.run(
        [_tool("storescu"), "-v", "--no-halt", "-aet", "MODALITY", "-aec", "SCIATIC", "127.0.0.1", str(receiver.port)]
        + [str(path) for path in (big[0], small[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert "Refused: OutOfResources" in output, output  # status 0xA700
    _wait_idle(receiver)
    small_uid = pydicom.dcmread(small[0]).SOPInstanceUID
    assert [p.name for p in receiver.drop_dir.iterdir()] == [f"{small_uid}.dcm"]  # hidden temporaries included
    assert (receiver.stats.too_large, receiver.stats.failures, receiver.stats.instances) == (1, 1, 1)
    big_uid = pydicom.dcmread(big[0]).SOPInstanceUID
    (refusal,) = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]
    assert big_uid in refusal.message and f"over the limit of {limit} bytes" in refusal.message, refusal.message
    assert "discarded while receiving" in refusal.message and "\n" not in refusal.getMessage()
    size = len(_dataset_bytes(big[0]))
    assert f"its dataset of {size} bytes" in refusal.message


def _send_partial(port: int, path: Path, how: str) -> None:
    """Associate, send the C-STORE command and all but the last data fragment, then quit."""
    ds = pydicom.dcmread(path)
    ae = AE(ae_title="FLAKY")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCIATIC", max_pdu=16384)
    try:
        assert assoc.is_established
        context = assoc.accepted_contexts[0]
        request = C_STORE()
        request.MessageID = 1
        request.AffectedSOPClassUID = ds.SOPClassUID
        request.AffectedSOPInstanceUID = ds.SOPInstanceUID
        request.Priority = 2
        request.DataSet = BytesIO(_dataset_bytes(path))
        message = C_STORE_RQ()
        message.primitive_to_message(request)
        assert context.context_id is not None
        fragments = list(message.encode_msg(context.context_id, 16384))
        assert len(fragments) > 3
        for primitive in fragments[:-1]:
            pdu = P_DATA_TF()
            pdu.from_primitive(primitive)
            assert assoc.dul.socket is not None
            assoc.dul.socket.send(pdu.encode())
        time.sleep(0.2)
        if how == "abort":
            assoc.abort()
        else:  # the network goes away without a word
            assert assoc.dul.socket is not None and assoc.dul.socket.socket is not None
            assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
            assoc.dul.socket.socket.close()
    finally:
        ae.shutdown()


@pytest.mark.parametrize("how", ["abort", "disconnect"])
def test_sender_quitting_mid_transfer_leaves_no_file(
    start_receiver: Callable[..., Receiver], tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    big = write_stack(tmp_path / "big", count=2, rows=256, columns=256)
    receiver = start_receiver()
    _send_partial(receiver.port, big[0], how)
    _wait_idle(receiver)
    assert list(receiver.drop_dir.iterdir()) == []  # hidden temporaries included
    assert receiver.stats.instances == 0
    assert any("association from FLAKY" in r.message and "0 instance(s)" in r.message for r in caplog.records)
    # the receiver carries on
    assert _storescu(receiver, big).returncode == 0
    _wait_idle(receiver)
    assert len(_visible(receiver.drop_dir)) == 2


def test_write_instance_never_overwrites(tmp_path: Path) -> None:
    first = write_instance(tmp_path, "1.2.3", b"one")
    second = write_instance(tmp_path, "1.2.3", b"two")
    odd = write_instance(tmp_path, "../../etc/passwd", b"three")
    assert (first.name, second.name) == ("1.2.3.dcm", "1.2.3.1.dcm")
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"
    assert odd.parent == tmp_path and odd.name.startswith("received-")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
