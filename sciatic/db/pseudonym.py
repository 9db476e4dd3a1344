"""Pseudonyms: a keyed HMAC of the PatientID, so no PHI is ever stored.

The same PatientID and key always give the same pseudonym (so a subject's
studies link up over time); without the key the pseudonym cannot be reversed
or recomputed from a guessed PatientID.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "sub-"
HEX_CHARS = 16  # 64 bits: collisions are negligible for any hospital's population


def pseudonymise(patient_id: str, key: bytes) -> str:
    """``sub-`` + the first 16 hex digits of HMAC-SHA256(key, PatientID)."""
    normalised = patient_id.strip().encode("utf-8")
    digest = hmac.new(key, normalised, hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_CHARS]
