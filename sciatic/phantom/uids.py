"""Deterministic DICOM UIDs: ``2.25.<uuid>`` derived from the seed by name hashing."""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:sciatic:phantom")

IMPLEMENTATION_CLASS_UID = f"2.25.{uuid.uuid5(_NAMESPACE, 'implementation').int}"
IMPLEMENTATION_VERSION_NAME = "SCIATIC_PH_1"


def derive_uid(seed: int, *parts: object) -> str:
    """Return a UID that depends only on ``seed`` and ``parts`` (same inputs, same UID).

    The UID is the decimal form of a name-based (SHA-1, version 5) UUID under the
    ``2.25`` root, so it is at most 44 characters long and never collides with
    UIDs from other seeds or parts.
    """
    name = "/".join(str(p) for p in (seed, *parts))
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"
