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

    def start(drop: Path | None = None, **kwargs: object) -> Receiver:
        receiver = serve(
            port=free_port(), ae_title="SCIATIC", drop_dir=drop or tmp_path / "drop", block=False, **kwargs
        )  # type: ignore[arg-type]
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

    drop = settings.drop_dir
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


def test_association_limit(start_receiver: Callable[..., Receiver], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver = start_receiver(max_associations=1)
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context("1.2.840.10008.1.1")
    held = ae.associate("127.0.0.1", receiver.port, ae_title="SCIATIC")
    try:
        assert held.is_established
        result = subprocess.run(
            [_tool("echoscu"), "-aet", "SECOND", "-aec", "SCIATIC", "127.0.0.1", str(receiver.port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert any("the limit is 1" in r.message for r in caplog.records), caplog.text
    finally:
        held.release()
        ae.shutdown()


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
