"""The old site of a phantom-trained model, regenerated: series to replay and to check for forgetting.

The shipped model learnt on phantom v2 studies (``sciatic.model.demo_model``).
A hospital fine-tuning it on its own labels holds none of that data, yet the
generator makes more of the same kind on demand. A retraining run whose
production model descends from the shipped one therefore records, in its
split, a ``phantom`` entry: a seed and a count of subjects to *replay* while
fine-tuning (mixed into the training series, against forgetting; a pool of
``replay_pool`` times that many is generated and each epoch replays a
different share of it, so that the run sees more of the old site's variety at
the same number of steps) and another
seed and count for the *reference* series on which challenger and champion
are both scored, so that a challenger that forgets the old site is not
promoted (``SCIATIC_PROMOTE_MAX_FORGETTING``). The seeds differ from the
shipped model's own training seed, so the reference series are unseen by it.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sciatic.model.data import Item, TrainingCase, as_case
from sciatic.model.shipped import SHIPPED_MODEL_SHA256_FILE

__all__ = ["PhantomOldSite", "is_shipped", "phantom_items"]

#: Seeds of the regenerated studies: train_seed + these offsets (the shipped model trained on seed 11).
REPLAY_SEED_OFFSET = 9100
REFERENCE_SEED_OFFSET = 9500


@dataclass(frozen=True)
class PhantomOldSite:
    """What a training run regenerates of its production model's phantom training data."""

    replay_seed: int
    replay_subjects: int  # replayed in each epoch; 0 when the run does not fine-tune
    reference_seed: int
    reference_subjects: int
    replay_pool: int = 1  # replay_pool * replay_subjects are generated; epoch e replays share e % replay_pool

    @classmethod
    def for_run(
        cls, train_seed: int, replay_subjects: int, reference_subjects: int, replay_pool: int = 1
    ) -> PhantomOldSite:
        return cls(
            replay_seed=train_seed + REPLAY_SEED_OFFSET,
            replay_subjects=max(0, replay_subjects),
            reference_seed=train_seed + REFERENCE_SEED_OFFSET,
            reference_subjects=max(0, reference_subjects),
            replay_pool=max(1, replay_pool),
        )

    def replay_cases(self, work_dir: Path) -> list[TrainingCase]:
        """The replay pool, generated into ``work_dir``: each case marked with the epochs that replay it."""
        items = phantom_items(work_dir, self.replay_subjects * self.replay_pool, self.replay_seed)
        return [
            dataclasses.replace(as_case(item), every=self.replay_pool, phase=i % self.replay_pool)
            for i, item in enumerate(items)
        ]

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> PhantomOldSite | None:
        if not value:
            return None
        return cls(**{key: int(value[key]) for key in cls.__dataclass_fields__ if key in value})


def is_shipped(sha256: str) -> bool:
    """True when a checkpoint's sha256 is the shipped phantom model's."""
    from sciatic.model.demo_model import read_digest

    return sha256.lower() == read_digest(SHIPPED_MODEL_SHA256_FILE)


def phantom_items(work_dir: Path, subjects: int, seed: int) -> list[Item]:
    """``subjects`` phantom v2 studies like the shipped model's, converted as the service would: (volume, mask).

    ``work_dir`` is emptied first, so a retried step writes the same files again.
    """
    from sciatic.model.demo_model import PHANTOM_OPTIONS, phantom_cases

    if subjects < 1:
        return []
    shutil.rmtree(work_dir, ignore_errors=True)
    return [case.item for case in phantom_cases(work_dir, subjects, seed, PHANTOM_OPTIONS)]
