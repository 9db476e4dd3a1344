"""The model that ships inside the package: a cascade trained on phantoms only (docs/model-card.md).

It is package data, so an installed wheel carries it; ``make model`` rebuilds
it bit-identically (``sciatic.model.demo_model``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED_MODEL", "SHIPPED_MODEL_NAME", "SHIPPED_MODEL_SHA256_FILE"]

SHIPPED_MODEL_NAME = "phantom-cascade"
SHIPPED_MODEL = Path(__file__).with_name(f"{SHIPPED_MODEL_NAME}.pt")
SHIPPED_MODEL_SHA256_FILE = Path(__file__).with_name(f"{SHIPPED_MODEL_NAME}.sha256")

if __name__ == "__main__":  # `python -m sciatic.model.shipped`: the path, for `sciatic models add`
    print(SHIPPED_MODEL)
