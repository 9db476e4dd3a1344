"""Model cards: what a registered model is, where it came from and how it did, as Markdown.

``render`` turns plain facts (gathered from the registry by
``sciatic.db.registry.card_facts``) into the card that is written beside the
models and exported with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CardFacts", "TrainingFacts", "render"]

INTENDED_USE = (
    "**Research use only; not for clinical use.** This model segments the sciatic nerve in axial "
    "proton-density MR of the thigh for research measurements. Its output must not inform the diagnosis "
    "or treatment of a patient. Its quality is known only on the data it was tested on (below, or in the "
    "card it came with); check it on local manual labels before relying on its measurements for a new "
    "scanner, protocol or population."
)


@dataclass(frozen=True)
class TrainingFacts:
    """The training run that produced a model, and the champion/challenger comparison that followed."""

    run_id: int
    trigger: str
    seed: int
    started: str
    start: str  # "fine-tuned from model 3 (`name`)" or "from scratch (random weights)"
    series: dict[str, int]  # train, val, test, replay
    subjects: dict[str, int]  # train, val, test
    challenger: dict[str, Any] | None  # Evaluation.to_dict() on the test series
    champion: dict[str, Any] | None
    champion_name: str | None
    interval: tuple[float, float, float] | None  # mean, low, high of the paired bootstrap
    decision: str
    detail: str
    phantom_replay: int = 0  # regenerated phantom studies replayed (sciatic.model.old_site)
    phantom_replay_per_epoch: int = 0  # of which each epoch replays this many


@dataclass(frozen=True)
class CardFacts:
    model_id: int
    name: str
    sha256: str
    config_name: str
    checkpoint: str
    origin: str
    sciatic_version: str
    created: str
    status: str
    promoted: str | None
    metrics: dict[str, float] = field(default_factory=dict)  # stored in the checkpoint (validation)
    training: TrainingFacts | None = None
    previous_card: str | None = None  # the card an imported model came with


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _training(facts: TrainingFacts) -> list[str]:
    series, subjects = facts.series, facts.subjects
    lines = [
        "## Training data",
        "",
        f"Training run {facts.run_id} (trigger `{facts.trigger}`, started {facts.started}, seed {facts.seed}): "
        f"{facts.start}.",
        "",
        "| part | series | subjects |",
        "| --- | --- | --- |",
    ]
    for part, what in (("train", "training"), ("val", "validation (early stopping)"), ("test", "test (frozen)")):
        lines.append(f"| {what} | {series.get(part, 0)} | {subjects.get(part, '-')} |")
    lines.append(f"| replayed from earlier training | {series.get('replay', 0)} | - |")
    if facts.phantom_replay:
        per_epoch = facts.phantom_replay_per_epoch
        rotation = f" ({per_epoch} in each epoch)" if 0 < per_epoch < facts.phantom_replay else ""
        lines.append(f"| replayed phantom studies like the shipped model's | {facts.phantom_replay}{rotation} | - |")
    lines += [
        "",
        "The split is by subject (every series of a subject in one part), stratified by cohort and seeded; "
        "it is stored in `training_run.split`.",
        "",
        "## Test results",
        "",
    ]
    new, old = facts.challenger or {}, facts.champion
    if old is None:
        lines += [
            f"No production model to compare with: mean Dice {_number(new.get('mean_dice'))}, "
            f"failure rate {_number(new.get('failure_rate'))} on {len(new.get('dice', {}))} test series.",
        ]
    else:
        lines += [
            f"| | this model | production at the time (`{facts.champion_name or '-'}`) |",
            "| --- | --- | --- |",
            f"| mean Dice | {_number(new.get('mean_dice'))} | {_number(old.get('mean_dice'))} |",
            f"| failure rate | {_number(new.get('failure_rate'))} | {_number(old.get('failure_rate'))} |",
        ]
        new_old, old_old = new.get("reference"), old.get("reference")
        if new_old and old_old:
            lines.append(
                f"| mean Dice on {len(new_old.get('dice', {}))} reference series of the old site | "
                f"{_number(new_old.get('mean_dice'))} | {_number(old_old.get('mean_dice'))} |"
            )
        lines += [
            "",
            "| test series | Dice, this model | Dice, production | difference |",
            "| --- | --- | --- | --- |",
        ]
        for name, value in sorted(new.get("dice", {}).items(), key=lambda item: int(item[0])):
            before = old.get("dice", {}).get(name)
            difference = None if before is None else value - before
            lines.append(f"| {name} | {_number(value)} | {_number(before)} | {_number(difference)} |")
    if facts.interval is not None:
        mean, low, high = facts.interval
        lines += [
            "",
            f"Per-series Dice difference (this model - production): mean {mean:+.3f}, paired bootstrap "
            f"confidence interval [{low:+.3f}, {high:+.3f}]. Promotion needs the interval's lower bound above "
            "the margin (`SCIATIC_PROMOTE_MARGIN_DICE`), a failure rate that is not worse and, on the old "
            "site's reference series, a mean Dice at most `SCIATIC_PROMOTE_MAX_FORGETTING` below production's.",
        ]
    lines += ["", f"Decision: **{facts.decision}**: {facts.detail}", ""]
    return lines


def render(facts: CardFacts) -> str:
    """The model card as Markdown."""
    lines = [
        f"# Model card: {facts.name}",
        "",
        INTENDED_USE,
        "",
        "| | |",
        "| --- | --- |",
        f"| model version | {facts.model_id} (`{facts.name}`), {facts.status} |",
        f"| origin | {facts.origin} |",
        f"| configuration | `{facts.config_name}` |",
        f"| checkpoint | `{facts.checkpoint}` |",
        f"| sha256 | `{facts.sha256}` |",
        f"| registered | {facts.created} (sciatic {facts.sciatic_version}) |",
        f"| promoted | {facts.promoted or '-'} |",
    ]
    if facts.metrics:
        shown = ", ".join(f"{k} {_number(v)}" for k, v in sorted(facts.metrics.items()))
        lines.append(f"| checkpoint metrics (validation) | {shown} |")
    lines.append("")
    if facts.training is not None:
        lines += _training(facts.training)
    if facts.previous_card:  # its headings one level down, under this card's own
        earlier = [f"##{line}" if line.startswith("#") else line for line in facts.previous_card.strip().splitlines()]
        lines += ["## The card it came with", "", *earlier, ""]
    return "\n".join(lines)
