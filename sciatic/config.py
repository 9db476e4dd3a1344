"""Settings from the environment (``SCIATIC_*``) and an optional TOML file.

Precedence: environment > config file (``SCIATIC_CONFIG_FILE``) > defaults.
Every directory defaults beneath ``SCIATIC_DATA_DIR``. The table of settings in
``docs/configuration.md`` is generated from this class (``sciatic config
--markdown``) so that the two cannot drift apart.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from sciatic.dicom.eligibility import EligibilityRules
from sciatic.dicom.limits import SeriesLimits
from sciatic.errors import ConfigurationError
from sciatic.evaluation.thresholds import QcThresholds
from sciatic.model.configs import CpuRuntime

ENV_PREFIX = "SCIATIC_"
CONFIG_FILE_ENV = "SCIATIC_CONFIG_FILE"
PSEUDONYM_KEY_FILE = ".pseudonym_key"

# Directories that default beneath data_dir, with the sub-folder they default to.
_SUBDIRS: dict[str, str] = {
    "drop_dir": "drop",
    "archive_dir": "archive",
    "quarantine_dir": "quarantine",
    "labels_dir": "labels",
    "model_dir": "models",
    "volumes_dir": "volumes",
    "results_dir": "results",
}


_QC = QcThresholds()  # the QC defaults live with the thresholds
_SERIES = SeriesLimits()  # and the size limits with theirs
_RULES = EligibilityRules()  # and the eligibility rules with theirs


class Settings(BaseSettings):
    """Effective configuration of one sciatic process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database; an embedded SQLite file "
        "`<data_dir>/sciatic.db` when unset. PostgreSQL in production, e.g. "
        "`postgresql+psycopg2://user@host/sciatic`.",
    )
    data_dir: Path = Field(
        Path("sciatic-data"), description="Root of all data; the directories below default beneath it."
    )
    drop_dir: Path | None = Field(None, description="Drop folder scanned by ingest. Default `<data_dir>/drop`.")
    archive_dir: Path | None = Field(
        None, description="Originals after conversion, `<StudyUID>/<SeriesUID>/`. Default `<data_dir>/archive`."
    )
    quarantine_dir: Path | None = Field(
        None, description="Bad files, with the reason in the database. Default `<data_dir>/quarantine`."
    )
    labels_dir: Path | None = Field(
        None, description="Manual labels to import (NIfTI / DICOM SEG). Default `<data_dir>/labels`."
    )
    model_dir: Path | None = Field(None, description="Model checkpoints. Default `<data_dir>/models`.")
    volumes_dir: Path | None = Field(None, description="Converted NIfTI volumes. Default `<data_dir>/volumes`.")
    results_dir: Path | None = Field(None, description="Masks, pictures and reports. Default `<data_dir>/results`.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the U-Net runs: `auto` picks CUDA when available."
    )
    cpu_runtime: CpuRuntime = Field(
        "onnxruntime",
        description=(
            "What runs the U-Net on the CPU: ONNX Runtime (faster; masks within Dice 0.999 of PyTorch's) or PyTorch."
        ),
    )
    series_quiet_seconds: float = Field(
        120.0, ge=0, description="A series is complete when no instance arrived for this long."
    )
    file_settle_seconds: float = Field(
        5.0, ge=0, description="A file modified more recently than this is treated as still being written."
    )
    max_file_bytes: int = Field(2 * 1024**3, gt=0, description="Files larger than this are quarantined (`too_large`).")
    max_image_matrix: int = Field(
        _SERIES.max_matrix, gt=0, description="A series with images of more rows or columns is refused (`too_large`)."
    )
    max_series_slices: int = Field(
        _SERIES.max_slices, gt=0, description="A series with more images (frames) is refused (`too_large`)."
    )
    max_series_voxels: int = Field(
        _SERIES.max_voxels,
        gt=0,
        description="A series with more voxels (rows x columns x images) is refused (`too_large`) before decoding.",
    )
    fast_header_reader: bool = Field(
        True,
        description="Read plain uncompressed DICOM headers with the project's own fast reader (checked against "
        "pydicom); false uses pydicom only.",
    )
    pseudonym_key: SecretStr | None = Field(
        None,
        description="Secret for the keyed HMAC that turns PatientID into a pseudonym. When unset, a "
        "random key is created once in `<data_dir>/.pseudonym_key`; set it explicitly in production "
        "so that every machine derives the same pseudonyms.",
    )
    eligibility_min_slices: int = Field(
        _RULES.min_slices, ge=1, description="Eligibility: a series with fewer slices is not segmented."
    )
    eligibility_max_tilt_deg: float = Field(
        _RULES.max_tilt_deg,
        ge=0,
        le=90,
        description="Eligibility: slices further than this from axial (the leg's long axis) are not segmented.",
    )
    eligibility_pd_min_tr_ms: float = Field(
        _RULES.pd_min_tr_ms, gt=0, description="Eligibility: a PD series has at least this RepetitionTime (ms)."
    )
    eligibility_pd_max_te_ms: float = Field(
        _RULES.pd_max_te_ms, gt=0, description="Eligibility: a PD series has at most this EchoTime (ms)."
    )
    eligibility_pd_pattern: str = Field(
        _RULES.pd_pattern,
        description="Eligibility: regular expression (case-insensitive) a SeriesDescription matches when a "
        "series without TR/TE is PD.",
    )
    eligibility_body_parts: str = Field(
        ",".join(_RULES.body_parts),
        description="Eligibility: BodyPartExamined values (comma-separated, spaces ignored) that mean thigh or leg.",
    )
    eligibility_include: str = Field(
        "", description="Eligibility: SeriesInstanceUIDs (comma-separated) always segmented, whatever the rules say."
    )
    eligibility_exclude: str = Field(
        "", description="Eligibility: SeriesInstanceUIDs (comma-separated) never segmented."
    )
    drop_stray_components: bool = Field(
        True,
        description=(
            "Drop stray specks from a predicted mask: 3D components under a tenth of the largest. "
            "Every substantial one stays (both legs, both branches)."
        ),
    )
    failure_dice: float = Field(
        _QC.failure_dice,
        ge=0,
        le=1,
        description="Dice below this counts as a failed segmentation (the seed's definition).",
    )
    qc_csa_min_mm2: float = Field(_QC.csa_min_mm2, ge=0, description="QC: a nerve slice with a smaller CSA is flagged.")
    qc_csa_max_mm2: float = Field(_QC.csa_max_mm2, gt=0, description="QC: a nerve slice with a larger CSA is flagged.")
    qc_max_components_per_slice: int = Field(
        _QC.max_components_per_slice, ge=1, description="QC: more separate ROI pieces in one slice are flagged."
    )
    qc_max_centroid_jump_mm: float = Field(
        _QC.max_centroid_jump_mm,
        gt=0,
        description="QC: a larger in-plane move of the ROI centroid between adjacent slices is flagged.",
    )
    qc_max_gap_slices: int = Field(
        _QC.max_gap_slices, ge=0, description="QC: more empty slices inside the nerve's range are flagged."
    )
    qc_min_volume_mm3: float = Field(_QC.min_volume_mm3, ge=0, description="QC: a smaller nerve volume is flagged.")
    qc_max_volume_mm3: float = Field(_QC.max_volume_mm3, gt=0, description="QC: a larger nerve volume is flagged.")
    qc_min_nerve_slice_fraction: float = Field(
        _QC.min_nerve_slice_fraction, ge=0, le=1, description="QC: a nerve on a smaller share of the slices is flagged."
    )
    qc_max_uncertainty: float = Field(
        _QC.max_uncertainty, ge=0, le=1, description="QC: a segmentation the network was less sure of is flagged."
    )
    qc_min_image_snr: float = Field(
        _QC.min_image_snr, ge=0, description="QC: an image with a lower estimated signal-to-noise ratio is flagged."
    )
    qc_max_nerve_anterior_mm: float = Field(
        _QC.max_nerve_anterior_mm,
        description="QC: a nerve further anterior (mm) than the centre of its thigh's cross-section is flagged.",
    )
    train_config: str = Field("cascade", description="Model configuration trained by `sciatic train` and retraining.")
    train_epochs: int = Field(40, ge=1, description="Epochs of a training run (early stopping may end it sooner).")
    train_seed: int = Field(0, description="Seed of the split and of training (deterministic on CPU).")
    promote_min_dice: float = Field(
        0.5, ge=0, le=1, description="With no production model, a challenger needs this mean test Dice to be promoted."
    )
    retrain_min_new_labels: int = Field(
        10, ge=1, description="New manual labels needed since the last training run to trigger retraining."
    )
    promote_margin_dice: float = Field(
        0.01,
        ge=0,
        description="A challenger is promoted only if the lower bound of the paired bootstrap confidence interval "
        "of its per-series test Dice minus production's exceeds this (and its failure rate is not worse).",
    )
    # retraining: fine-tuning, replay, time budget, promotion statistics (docs/model.md)
    train_from_scratch: bool = Field(
        False,
        description="Train challengers from random weights. When false, a challenger is fine-tuned from the "
        "production model's weights whenever that model has the configuration being trained.",
    )
    train_replay_share: float = Field(
        0.67,
        ge=0,
        lt=1,
        description="Fine-tuning: up to this share of the training series are replayed from the training runs "
        "behind the production model, against forgetting (0.67: about two for each new one; 0: none).",
    )
    train_replay_pool: int = Field(
        3,
        ge=1,
        description="Fine-tuning a descendant of the shipped model: this many times the replayed phantom studies "
        "are generated, and each epoch replays a different share of them (1: the same studies every epoch, "
        "which forgot more of the old site in the adaptation benchmark).",
    )
    train_new_series_weight: int = Field(
        1,
        ge=1,
        description="Fine-tuning with replay: each new training series gives this many times the slices per "
        "epoch of a replayed one (1: the same; 2 forgot more of the old site in the adaptation benchmark).",
    )
    train_fine_tune_lr_factor: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Fine-tuning: the configuration's learning rate is multiplied by this (the run's stored "
        "configuration shows the result).",
    )
    train_reference_series: int = Field(
        20,
        ge=0,
        description="When the production model descends from the shipped phantom model: phantom studies like "
        "those it learnt on, regenerated for each training run, on which challenger and production are both "
        "scored against forgetting (0: none). Fine-tuning also replays such studies up to the replay share.",
    )
    promote_max_forgetting: float = Field(
        0.02,
        ge=0,
        description="A challenger whose mean Dice on the reference series of the old site (earlier test series, "
        "regenerated phantom studies) falls more than this below production's is not promoted.",
    )
    train_max_minutes: float = Field(
        0.0, ge=0, description="Wall-time budget of a training run, in minutes; 0: the epochs alone decide."
    )
    promote_confidence: float = Field(
        0.95,
        gt=0,
        lt=1,
        description="Confidence level of the paired bootstrap interval of the per-series Dice difference "
        "that decides promotion.",
    )
    promote_bootstrap_resamples: int = Field(
        2000, ge=100, description="Resamples of that paired bootstrap (seeded with `SCIATIC_TRAIN_SEED`)."
    )
    scp_ae_title: str = Field("SCIATIC", max_length=16, description="AE title of the DICOM receiver (`sciatic scp`).")
    scp_port: int = Field(11112, gt=0, lt=65536, description="TCP port of the DICOM receiver.")
    scp_allowed_aets: str = Field(
        "", description="Comma-separated calling AE titles the receiver accepts; empty accepts any."
    )
    scp_max_associations: int = Field(
        4,
        ge=1,
        description="Concurrent associations the receiver accepts (connections that have not yet sent their "
        "association request do not count).",
    )
    scp_request_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a new connection to the receiver may take to send its association request before "
        "the receiver closes it.",
    )
    scp_idle_timeout: float = Field(
        60.0,
        gt=0,
        description="Seconds an association with the receiver, or a PDU half-way, may stay silent before the "
        "receiver aborts it.",
    )
    scp_max_dataset_bytes: int = Field(
        256 * 1024**2,
        gt=0,
        description="Largest dataset the receiver accepts per instance; a larger one is refused with status "
        "0xA700 (Out of Resources) while it arrives and nothing is written.",
    )
    pacs_host: str = Field(
        "", description="PACS host that the results (DICOM SEG, SR, SC) are sent to; empty sends nothing."
    )
    pacs_port: int = Field(104, gt=0, lt=65536, description="PACS port (C-STORE).")
    pacs_ae_title: str = Field("PACS", max_length=16, description="PACS AE title.")
    # results to the PACS: which, and how the outbox retries (docs/deploy.md)
    pacs_send_qc: Literal["pass", "all"] = Field(
        "pass",
        description="Which new segmentations go to the PACS: `pass` only those whose QC passed, `all` every one.",
    )
    pacs_queue_days: float = Field(
        7.0,
        gt=0,
        description="The outbox DAG queues the results of segmentations made in the last this many days "
        "(older ones: `sciatic outbox queue ID`).",
    )
    pacs_max_attempts: int = Field(
        10, ge=1, description="Tries to send one object to the PACS before it is marked failed."
    )
    pacs_retry_seconds: float = Field(
        60.0,
        gt=0,
        description="Wait before the second try to send an object to the PACS; doubled after each failed try, "
        "up to an hour.",
    )
    segment_chunk_size: int = Field(
        32,
        ge=1,
        description="Series per Airflow segmentation task; the model is loaded once per chunk (1: a task per series).",
    )
    segment_chunk_max_minutes: float = Field(
        60.0,
        gt=0,
        description="A chunk starts no new series after this long; the rest wait for the next segmentation run.",
    )
    gpu_pool_slots: int = Field(
        1, ge=1, description="Slots of the Airflow pool `gpu`: model tasks that may run at once (one per GPU)."
    )
    segment_schedule: str = Field("0 1 * * *", description="Cron schedule of the nightly segmentation DAG.")
    ingest_interval_seconds: int = Field(
        30,
        ge=5,
        description="Seconds between two runs of the ingest DAG (a pass over the drop folder). A series that has "
        "gone quiet waits up to this long to be converted; an idle pass only lists the folder.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            if not Path(config_file).is_file():
                raise ConfigurationError(f"{CONFIG_FILE_ENV}={config_file} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)

    @model_validator(mode="after")
    def _check_pattern(self) -> Settings:
        try:
            re.compile(self.eligibility_pd_pattern)
        except re.error as exc:
            raise ValueError(f"SCIATIC_ELIGIBILITY_PD_PATTERN is not a regular expression: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _resolve_directories(self) -> Settings:
        root = self.data_dir.expanduser().resolve()
        object.__setattr__(self, "data_dir", root)
        for name, sub in _SUBDIRS.items():
            value: Path | None = getattr(self, name)
            object.__setattr__(self, name, (value.expanduser().resolve() if value else root / sub))
        return self

    # Typed accessors: after validation every directory is set.
    def dir(self, name: str) -> Path:
        """One of the configured directories (``drop``, ``archive``, ...), created if missing."""
        path: Path = getattr(self, f"{name}_dir")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            variable = f"{ENV_PREFIX}DATA_DIR" + ("" if name == "data" else f" or {ENV_PREFIX}{name.upper()}_DIR")
            raise ConfigurationError(f"cannot create {path} ({exc.strerror or exc}): set {variable}") from exc
        return path

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'sciatic.db'}"

    def pseudonym_secret(self) -> bytes:
        """The HMAC key: configured, or generated once and kept in the data directory."""
        if self.pseudonym_key is not None:
            value = self.pseudonym_key.get_secret_value()
            if len(value) < 16:
                raise ConfigurationError("SCIATIC_PSEUDONYM_KEY must be at least 16 characters long")
            return value.encode()
        key_file = self.data_dir / PSEUDONYM_KEY_FILE
        if not key_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return key_file.read_text().strip().encode()

    @property
    def scp_allowed_list(self) -> list[str]:
        return [a.strip() for a in self.scp_allowed_aets.split(",") if a.strip()]

    def eligibility_rules(self) -> EligibilityRules:
        """The rules that decide which converted series are segmented (docs/eligibility.md)."""
        return EligibilityRules(
            min_slices=self.eligibility_min_slices,
            max_tilt_deg=self.eligibility_max_tilt_deg,
            pd_min_tr_ms=self.eligibility_pd_min_tr_ms,
            pd_max_te_ms=self.eligibility_pd_max_te_ms,
            pd_pattern=self.eligibility_pd_pattern,
            body_parts=tuple(_items(self.eligibility_body_parts, upper=True)),
            include_uids=frozenset(_items(self.eligibility_include)),
            exclude_uids=frozenset(_items(self.eligibility_exclude)),
        )

    def series_limits(self) -> SeriesLimits:
        """The size limits of one series, checked before decoding (see docs/security.md)."""
        return SeriesLimits(self.max_image_matrix, self.max_series_slices, self.max_series_voxels)

    def qc_thresholds(self) -> QcThresholds:
        """The label-free QC thresholds (see docs/qc.md)."""
        return QcThresholds(
            csa_min_mm2=self.qc_csa_min_mm2,
            csa_max_mm2=self.qc_csa_max_mm2,
            max_components_per_slice=self.qc_max_components_per_slice,
            max_centroid_jump_mm=self.qc_max_centroid_jump_mm,
            max_gap_slices=self.qc_max_gap_slices,
            min_volume_mm3=self.qc_min_volume_mm3,
            max_volume_mm3=self.qc_max_volume_mm3,
            min_nerve_slice_fraction=self.qc_min_nerve_slice_fraction,
            max_nerve_anterior_mm=self.qc_max_nerve_anterior_mm,
            max_uncertainty=self.qc_max_uncertainty,
            min_image_snr=self.qc_min_image_snr,
            failure_dice=self.failure_dice,
        )

    def describe(self) -> list[tuple[str, str, str]]:
        """(environment variable, effective value, description) with secrets masked."""
        rows = []
        for name, field in type(self).model_fields.items():
            value: Any = getattr(self, name)
            if name == "database_url":
                shown = mask_url(self.effective_database_url)
            elif isinstance(value, SecretStr):
                shown = "********"
            elif name == "pseudonym_key":
                shown = f"(unset: key file {self.data_dir / PSEUDONYM_KEY_FILE})"
            else:
                shown = str(value)
            rows.append((ENV_PREFIX + name.upper(), shown, field.description or ""))
        return rows


def _items(text: str, upper: bool = False) -> list[str]:
    """The non-empty items of a comma-separated setting (spaces removed; upper-cased on request)."""
    items = [item.strip().replace(" ", "") for item in text.split(",")]
    return [item.upper() if upper else item for item in items if item]


def defaults_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) for the documentation."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            default = str(default)
        rows.append((ENV_PREFIX + name.upper(), "" if default is None else str(default), field.description or ""))
    return rows


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


#: SCIATIC_* variables that are not settings: read by the deployment, the tests or the development tools.
NOT_SETTINGS = frozenset(
    {CONFIG_FILE_ENV, "SCIATIC_FAULT_AT", "SCIATIC_DB_PASSWORD", "SCIATIC_DB_HOST", "SCIATIC_IMAGE"}
    | {"SCIATIC_GPU_IMAGE", "SCIATIC_SCP_BIND"}
)
NOT_SETTINGS_PREFIXES = ("SCIATIC_TEST_", "SCIATIC_AIRFLOW_")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``SCIATIC_*`` names in ``environ`` that are neither a setting nor a known non-setting (typos)."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(
        name
        for name in environ
        if name.upper().startswith(ENV_PREFIX)
        and name.upper() not in known | NOT_SETTINGS
        and not name.upper().startswith(NOT_SETTINGS_PREFIXES)
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``).

    An unknown ``SCIATIC_*`` variable is refused, not ignored: a typo such as
    ``SCIATIC_DATABASE_ULR`` would otherwise quietly run on the wrong database.
    """
    unknown = unknown_variables(os.environ)
    if unknown:
        known = [ENV_PREFIX + name.upper() for name in Settings.model_fields]
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name.upper(), known, n=1)
            hints.append(f"{name}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise ConfigurationError(
            "unknown setting(s) in the environment: " + ", ".join(hints) + "; `sciatic config --markdown` lists them"
        )
    try:
        return Settings()
    except ConfigurationError:
        raise
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            f" (got {error.get('input')!r})"
            for error in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from exc
    except (ValueError, OSError) as exc:  # the TOML file: unreadable or not TOML
        raise ConfigurationError(f"{CONFIG_FILE_ENV}={os.environ.get(CONFIG_FILE_ENV)} cannot be read: {exc}") from exc
