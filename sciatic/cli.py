"""The ``sciatic`` command: thin argument parsing over the library modules.

Each sub-command parses its arguments and calls one function elsewhere; no
logic lives here. ``main(argv=None)`` returns the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sciatic import __version__
from sciatic.errors import SciaticError

if TYPE_CHECKING:
    from sqlalchemy import Engine

Handler = Callable[[argparse.Namespace], int]


def _cmd_config(args: argparse.Namespace) -> int:
    from sciatic.config import defaults_table, get_settings

    if args.markdown:
        print("| Variable | Default | Meaning |\n| --- | --- | --- |")
        for name, default, description in defaults_table():
            print(f"| `{name}` | {f'`{default}`' if default else '(see meaning)'} | {description} |")
        return 0
    rows = get_settings().describe()
    width = max(len(name) for name, _, _ in rows)
    for name, value, _ in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from sciatic.config import get_settings
    from sciatic.db import migrate
    from sciatic.db.session import default_engine

    settings = get_settings()
    settings.dir("data")
    url = settings.effective_database_url
    if args.db_command == "upgrade":
        migrate.upgrade(url, args.revision)
        print(migrate.status(default_engine()).describe())
    elif args.db_command == "downgrade":
        migrate.downgrade(url, args.revision)
        print(migrate.status(default_engine()).describe())
    elif args.db_command == "status":
        state = migrate.status(default_engine())
        print(state.describe())
        return 0 if state.up_to_date else 1
    elif args.db_command == "revision":
        migrate.new_revision(url, args.message, autogenerate=not args.empty)
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from sciatic import pipeline

    report = pipeline.ingest(run_id=args.run_id)
    print(report.summary())
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from sciatic.dicom.convert import convert_directory

    try:
        report = convert_directory(args.dicom_dir, args.output)
    except OSError as exc:
        print(f"sciatic: error: {exc}", file=sys.stderr)
        return 1
    converted = [s for s in report.series if s.output is not None]
    for outcome in report.series:
        what = outcome.output.name if outcome.output else f"refused ({outcome.reason}): {outcome.detail}"
        print(f"{outcome.series_instance_uid}  {outcome.series_description or '-'}  {what}")
    for refusal in report.refused_files:
        print(f"{refusal.path}  not used ({refusal.reason}): {refusal.detail}")
    print(
        f"{len(converted)} of {len(report.series)} series converted, {len(report.refused_files)} files not used; "
        f"details in {report.report_path}"
    )
    return 0


def _cmd_qc(args: argparse.Namespace) -> int:
    import json

    from sciatic.evaluation.qc import compare_files

    if args.qc_command == "compare":
        result = compare_files(args.prediction, args.label)
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    elif args.qc_command == "overlay":
        from sciatic.steps.report import overlay_png

        print(overlay_png(_engine(), args.segmentation_id, args.output, zoom=not args.no_zoom))
    elif args.qc_command == "raters":
        from sciatic.steps.qc import inter_rater_agreement

        print(json.dumps(inter_rater_agreement(_engine(), args.series_uid), indent=2))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from sciatic.steps.report import write_html_report

    path = write_html_report(_engine(), args.output, since=args.since, until=args.until, model_id=args.model)
    print(f"report written to {path} (open it in a browser)")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    if args.version == 2:
        return _phantom_v2(args)
    from sciatic.phantom import PhantomOptions, generate

    if any(getattr(args, name) is not None for name in V2_ONLY):
        raise SystemExit(
            f"sciatic phantom: --{'/--'.join(n.replace('_', '-') for n in V2_ONLY)} apply to --version 2 only"
        )

    matrix, slices = args.matrix or "256x256", args.slices or "40"
    options = PhantomOptions(
        matrix=None if matrix == "random" else _matrix(matrix),
        slices=None if slices == "random" else int(slices),
        patient_fraction=args.patient_fraction,
        hard_fraction=0.2 if args.hard_fraction is None else args.hard_fraction,
    )
    manifest = generate(args.output, args.subjects, args.seed, labels_dir=args.labels, options=options)
    cohorts = [s.cohort for s in manifest.subjects]
    print(
        f"wrote {len(cohorts)} studies to {args.output} ({cohorts.count('patient')} patients, "
        f"{cohorts.count('control')} controls); manifest {args.output}/manifest.json"
        + (f"; labels in {args.labels}" if args.labels else "")
    )
    return 0


V2_ONLY = ("bilateral_fraction", "bifurcation_fraction", "fat_sat_fraction", "three_d_fraction", "site")


def _phantom_v2(args: argparse.Namespace) -> int:
    from sciatic.phantom.v2 import PhantomV2Options, generate_v2

    if args.matrix is not None:
        raise SystemExit("sciatic phantom: --matrix applies to --version 1 only (v2 fits the field of view)")
    if args.hard_fraction is not None:
        raise SystemExit("sciatic phantom: --hard-fraction applies to --version 1 only")
    chosen = {name: value for name in V2_ONLY if (value := getattr(args, name)) is not None}
    try:
        options = PhantomV2Options(
            slices=None if args.slices in (None, "random") else int(args.slices),
            patient_fraction=args.patient_fraction,
            **chosen,
        )
    except ValueError as exc:
        raise SystemExit(f"sciatic phantom: {exc}") from exc
    manifest = generate_v2(args.output, args.subjects, args.seed, labels_dir=args.labels, options=options)
    subjects = manifest.subjects
    print(
        f"wrote {len(subjects)} v2 studies"
        + (f" of site {options.site}" if args.site else "")
        + f" to {args.output} ({sum(s.cohort == 'patient' for s in subjects)} patients, "
        f"{sum(s.field_of_view == 'bilateral' for s in subjects)} bilateral, "
        f"{sum(s.bifurcation for s in subjects)} with the bifurcation in view); manifest {args.output}/manifest.json"
        + (f"; labels in {args.labels}" if args.labels else "")
    )
    return 0


def _matrix(text: str) -> tuple[int, int]:
    rows, _, columns = text.lower().partition("x")
    return int(rows), int(columns or rows)


def _cmd_montage(args: argparse.Namespace) -> int:
    from sciatic.imaging.picture import render_montage_file

    print(render_montage_file(args.volume, args.output, mask_path=args.mask))
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sciatic import pipeline

    series_ids = _series_ids(args.series) if args.series else pipeline.pending_series()
    if not series_ids:
        print("nothing to segment: every current series has a segmentation by the model")
        return 0
    for series_id in tqdm(series_ids, desc="segmenting", unit="series"):
        segmentation_id = pipeline.segment(series_id, model_id=args.model, force=args.force)
        tqdm.write(f"series {series_id}: segmentation {segmentation_id}")
    return 0


def _series_ids(uids: list[str]) -> list[int]:
    from sciatic.db.queries import current_series
    from sciatic.db.session import session_scope

    ids = []
    with session_scope(_engine()) as session:
        for uid in uids:
            current = current_series(session, uid)
            if current is None:
                raise SciaticError(f"no converted series with SeriesInstanceUID {uid}")
            ids.append(current.id)
    return ids


def _cmd_models(args: argparse.Namespace) -> int:
    from sciatic.db import registry
    from sciatic.db.session import session_scope

    if args.models_command in {"add", "export"}:
        return _models_files(args)
    with session_scope(_engine()) as session:
        if args.models_command == "promote":
            version = registry.promote(session, args.id)
            print(f"model {version.id} ({version.name}) is now in production")
        elif args.models_command == "retire":
            version = registry.retire(session, args.id)
            print(f"model {version.id} ({version.name}) is retired")
        else:
            for version in registry.all_versions(session):
                dice = (version.metrics or {}).get("val_dice")
                shown = "-" if dice is None else f"{dice:.3f}"
                print(
                    f"{version.id:>4}  {version.status.value:<10}  {version.name:<40}  "
                    f"{version.config_name:<8}  val Dice {shown}  {version.checkpoint_sha256[:12]}"
                )
    return 0


def _models_files(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sciatic.config import get_settings
    from sciatic.steps import models

    if args.models_command == "export":
        exported = models.export_model(get_settings(), _engine(), args.id, Path(args.output))
        print(f"model {args.id} exported: {exported.checkpoint}, {exported.sha256_file.name}, {exported.card.name}")
        return 0
    added = models.add_model(
        get_settings(), _engine(), Path(args.path), name=args.name, promote=args.promote, sha256=args.sha256
    )
    what = "installed as" if added.new else "was registered already as"
    check = "sha256 verified" if added.verified else "sha256 NOT verified: no --sha256 and no .sha256 file beside it"
    print(f"{args.path} {what} model {added.model_id} ({added.name}), {check}; model card {added.card}")
    if added.promoted:
        print(f"model {added.model_id} ({added.name}) is now in production")
    return 0


def _cmd_labels(args: argparse.Namespace) -> int:
    from sciatic import pipeline

    report = pipeline.label_import()
    print(report.summary())
    for path, reason in report.refused:
        print(f"refused {path}: {reason}")
    for path in report.waiting:
        print(f"waiting for its series: {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from sciatic import pipeline

    run_id = pipeline.start_training_run("cli", config_name=args.config, from_scratch=args.from_scratch or None)
    model_id = pipeline.train_challenger(run_id, epochs=args.epochs, progress=True, max_minutes=args.max_minutes)
    print(f"training run {run_id}: challenger is model {model_id}")
    if args.no_decide:
        return 0
    decision = pipeline.evaluate_and_decide(run_id)
    print(f"training run {run_id}: {decision} (details: sciatic models list; table training_run)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from sciatic.config import get_settings
    from sciatic.nightly import run_nightly

    summary = run_nightly(run_id=args.run_id)
    print(f"ingest: {summary.ingest}")
    if summary.no_model:
        from sciatic.model.shipped import SHIPPED_MODEL

        print(
            "no production model: nothing segmented. Install the shipped phantom model with\n"
            f"  sciatic models add {SHIPPED_MODEL} --promote\n"
            "then label series and `sciatic train` your own (docs/deploy.md), or `sciatic models promote ID`"
        )
    if summary.cases:
        print(summary.table())
    for line in summary.problems():
        print(line)
    settings = get_settings()
    print(
        f"labels imported: {summary.labels_imported}\n{summary.outbox_line()}\n"
        f"masks and pictures: {settings.results_dir}\ndatabase: {settings.effective_database_url}"
    )
    return 1 if summary.failed_series or summary.not_queued else 0


def _cmd_scp(args: argparse.Namespace) -> int:
    from sciatic.config import get_settings
    from sciatic.dicom.receiver import serve

    settings = get_settings()
    logging.getLogger("sciatic").setLevel(logging.INFO)
    serve(
        port=args.port or settings.scp_port,
        ae_title=args.ae_title or settings.scp_ae_title,
        drop_dir=settings.dir("drop"),
        allowed_calling=args.allow or settings.scp_allowed_list,
        max_associations=args.max_associations or settings.scp_max_associations,
        block=True,
        request_timeout=settings.scp_request_timeout,
        idle_timeout=settings.scp_idle_timeout,
        max_dataset_bytes=settings.scp_max_dataset_bytes,
    )
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from sciatic import pipeline

    sent = " and sent to the PACS" if args.send else ""
    if args.export_command == "sr":
        report = pipeline.export_sr(args.segmentation_id, args.output, send=args.send, seg=args.seg)
        made = "written to" if report.seg_written else "given as"
        print(f"DICOM SR written to {report.sr.path}{sent}; the SEG it references {made} {report.seg_path}")
    elif args.export_command == "sc":
        picture = pipeline.export_sc(args.segmentation_id, args.output, send=args.send)
        print(f"DICOM Secondary Capture written to {picture.path}{sent} (series {picture.series_instance_uid})")
    else:
        result = pipeline.export_seg(args.segmentation_id, args.output, send=args.send)
        print(
            f"DICOM SEG written to {result.path} ({result.frames} frames, referencing series "
            f"{result.referenced_series_instance_uid}){sent}"
        )
    return 0


def _cmd_outbox(args: argparse.Namespace) -> int:
    from sciatic import pipeline
    from sciatic.db.enums import OutboxStatus
    from sciatic.steps import export, outbox

    if args.outbox_command == "retry":
        queued = outbox.retry(_engine(), args.ids)
        print(f"{len(queued)} object(s) queued again: {queued}" if queued else "nothing to retry")
    elif args.outbox_command == "queue":
        from sciatic.config import get_settings

        for segmentation_id in args.segmentation_ids:
            ids = export.queue_results(get_settings(), _engine(), segmentation_id)
            print(f"segmentation {segmentation_id}: outbox {ids or 'nothing queued (no PACS, or QC not pass)'}")
    elif args.outbox_command == "send":
        print(pipeline.drain_outbox().summary())
    else:
        status = OutboxStatus(args.status) if args.status else None
        for e in outbox.entries(_engine(), status):
            when = f"sent {e.sent_at:%Y-%m-%d %H:%M}" if e.sent_at else f"next {e.next_attempt_at:%Y-%m-%d %H:%M}"
            when += " UTC"
            error = f"  {e.last_error}" if e.last_error and e.status is not OutboxStatus.SENT else ""
            print(
                f"{e.id:>5}  seg {e.segmentation_id:<5} {e.kind.value:<3} {e.status.value:<8} "
                f"{e.attempts:>2} tries  {when}  {e.destination}{error}"
            )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sciatic.demo import run_demo
    from sciatic.model.shipped import SHIPPED_MODEL

    return run_demo(Path(args.dir).resolve(), subjects=args.subjects, model=Path(args.model or SHIPPED_MODEL))


def _cmd_airflow(args: argparse.Namespace) -> int:
    from sciatic.airflow_setup import setup_airflow
    from sciatic.config import get_settings

    print(setup_airflow(gpu_slots=args.gpu_slots or get_settings().gpu_pool_slots))
    return 0


def _engine() -> Engine:
    """The configured database, checked to be reachable and at the code's schema."""
    from sciatic.db.migrate import require_head
    from sciatic.db.session import default_engine

    engine = default_engine()
    require_head(engine)
    return engine


def recovery_hint(exc: SciaticError) -> str | None:
    """The 'Recovery:' paragraph of the exception's docstring, on one line."""
    doc = type(exc).__doc__ or ""
    if "Recovery:" not in doc:
        return None
    paragraph = doc.split("Recovery:", 1)[1].split("\n\n", 1)[0]
    return "Recovery: " + " ".join(paragraph.split())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sciatic",
        description="Sciatic nerve segmentation in proton-density MR of the upper leg. "
        "Configuration comes from SCIATIC_* environment variables (see `sciatic config`).",
    )
    parser.add_argument("--version", action="version", version=f"sciatic {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("config", help="print the effective configuration (secrets masked)")
    p.add_argument("--markdown", action="store_true", help="print the settings table with defaults as Markdown")
    p.set_defaults(handler=_cmd_config)

    p = commands.add_parser("db", help="database schema: upgrade, downgrade, status, revision")
    db = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    q = db.add_parser("upgrade", help="bring the database to the newest schema (default) or a revision")
    q.add_argument("revision", nargs="?", default="head")
    q = db.add_parser("downgrade", help="go back to a revision (`base` empties the schema)")
    q.add_argument("revision")
    db.add_parser("status", help="current and newest revision; exit 1 when behind")
    q = db.add_parser("revision", help="(developers) write the next migrations/versions/NNNN_slug.py")
    q.add_argument("-m", "--message", required=True)
    q.add_argument("--empty", action="store_true", help="do not autogenerate from the ORM")
    p.set_defaults(handler=_cmd_db)

    p = commands.add_parser("convert", help="convert a folder of DICOM files to NIfTI volumes (no database)")
    p.add_argument("dicom_dir", help="folder searched recursively for DICOM files")
    p.add_argument("-o", "--output", required=True, help="output folder: one .nii.gz per series + series.json")
    p.set_defaults(handler=_cmd_convert)

    p = commands.add_parser("ingest", help="one pass over the drop folder: index, quarantine, convert quiet series")
    p.add_argument("--run-id", help="name this pass in the audit trail (Airflow passes its run id)")
    p.set_defaults(handler=_cmd_ingest)

    p = commands.add_parser("phantom", help="write synthetic thigh MR studies (DICOM) and their nerve masks")
    p.add_argument("-o", "--output", required=True, help="folder for the studies (one sub-folder per subject)")
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    p.add_argument("--labels", help="folder for the ground-truth masks, <SeriesInstanceUID>.nii.gz")
    p.add_argument(
        "--version", type=int, choices=(1, 2), default=2, help="generator: 2 (realistic, the default) or 1 (simple)"
    )
    p.add_argument("--matrix", help="v1: ROWSxCOLUMNS, or `random` (default 256x256)")
    p.add_argument("--slices", help="PD slice count, or `random` (v1: default 40, random 36-44; v2: default random)")
    p.add_argument("--patient-fraction", type=float, default=0.5, help="share of CMT1A-like patients")
    p.add_argument("--hard-fraction", type=float, help="v1: share of deliberately hard cases (0.2)")
    p.add_argument("--bilateral-fraction", type=float, help="v2: share with both thighs in view (0.5)")
    p.add_argument("--bifurcation-fraction", type=float, help="v2: share whose nerve splits in view (0.5)")
    p.add_argument("--fat-sat-fraction", type=float, help="v2: share of fat-suppressed PD series (0.25)")
    p.add_argument("--three-d-fraction", type=float, help="v2: share of 3D PD series (0.25)")
    p.add_argument("--site", help="v2: the PD protocol, `default` or `site_b` (another vendor: docs/phantom.md)")
    p.set_defaults(handler=_cmd_phantom)

    p = commands.add_parser("montage", help="picture of a volume as the seed's 5-slice montages (PNG)")
    p.add_argument("volume", help="NIfTI volume")
    p.add_argument("-o", "--output", required=True, help="PNG file")
    p.add_argument("--mask", help="mask NIfTI on the same grid, drawn in blue")
    p.set_defaults(handler=_cmd_montage)

    p = commands.add_parser("segment", help="segment series with the production model (or --model)")
    p.add_argument("--series", nargs="*", metavar="UID", help="SeriesInstanceUIDs (default: every pending series)")
    p.add_argument("--model", type=int, help="model version id (default: the production model)")
    p.add_argument("--force", action="store_true", help="segment again even when a segmentation exists")
    p.set_defaults(handler=_cmd_segment)

    p = commands.add_parser("models", help="the model registry: list, add, export, promote, retire")
    models = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    models.add_parser("list", help="every model version with its status")
    q = models.add_parser("add", help="install a checkpoint (from a GPU machine, another site, the shipped model)")
    q.add_argument("path", help="checkpoint file (.pt); a NAME.sha256 beside it is checked, and NAME.md kept")
    q.add_argument("--name", help="model name (default: the file name without .pt)")
    q.add_argument("--promote", action="store_true", help="make it the production model")
    q.add_argument("--sha256", help="the checkpoint's expected sha256 (default: from PATH's .sha256 file, if any)")
    q = models.add_parser("export", help="write a model's checkpoint, .sha256 and model card into a folder")
    q.add_argument("id", type=int)
    q.add_argument("-o", "--output", required=True, help="folder (created if missing)")
    q = models.add_parser("promote", help="make a model version the production model")
    q.add_argument("id", type=int)
    q = models.add_parser("retire", help="take a model version out of use")
    q.add_argument("id", type=int)
    p.set_defaults(handler=_cmd_models)

    p = commands.add_parser("train", help="train a challenger on the labelled series; promote it if better")
    p.add_argument("--config", help="model configuration (default SCIATIC_TRAIN_CONFIG): seed, cascade")
    p.add_argument("--epochs", type=int, help="default SCIATIC_TRAIN_EPOCHS")
    p.add_argument("--no-decide", action="store_true", help="train only; leave the registry as it is")
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="start from random weights, not the production model's (default SCIATIC_TRAIN_FROM_SCRATCH)",
    )
    p.add_argument("--max-minutes", type=float, help="wall-time budget (default SCIATIC_TRAIN_MAX_MINUTES; 0: none)")
    p.set_defaults(handler=_cmd_train)

    p = commands.add_parser("labels", help="manual labels: import")
    labels = p.add_subparsers(dest="labels_command", required=True, metavar="ACTION")
    labels.add_parser("import", help="import new labels from SCIATIC_LABELS_DIR (NIfTI, see docs/labels.md)")
    p.set_defaults(handler=_cmd_labels)

    p = commands.add_parser("scp", help="DICOM receiver (C-STORE SCP) writing into the drop folder")
    p.add_argument("--port", type=int, help="default SCIATIC_SCP_PORT (11112)")
    p.add_argument("--ae-title", help="default SCIATIC_SCP_AE_TITLE (SCIATIC)")
    p.add_argument("--allow", action="append", metavar="AE", help="accept this calling AE title (repeatable)")
    p.add_argument("--max-associations", type=int, help="default SCIATIC_SCP_MAX_ASSOCIATIONS (4)")
    p.set_defaults(handler=_cmd_scp)

    p = commands.add_parser("export", help="export results: a segmentation as DICOM SEG, SR or SC")
    export = p.add_subparsers(dest="export_command", required=True, metavar="WHAT")
    q = export.add_parser("seg", help="DICOM Segmentation object referencing the source series")
    q.add_argument("segmentation_id", type=int)
    q.add_argument("-o", "--output", required=True, help="output .dcm file")
    q.add_argument("--send", action="store_true", help="also send it to SCIATIC_PACS_HOST (C-STORE)")
    q = export.add_parser("sr", help="DICOM SR measurement report (TID 1500) referencing a SEG and the source series")
    q.add_argument("segmentation_id", type=int)
    q.add_argument("-o", "--output", required=True, help="output .dcm file")
    q.add_argument(
        "--seg", help="the SEG to reference (from `sciatic export seg`); default: a new one, <output>-seg.dcm"
    )
    q.add_argument("--send", action="store_true", help="also send it and its SEG to SCIATIC_PACS_HOST (C-STORE)")
    q = export.add_parser("sc", help="DICOM Secondary Capture: the montage with the nerve outline, a new series")
    q.add_argument("segmentation_id", type=int)
    q.add_argument("-o", "--output", required=True, help="output .dcm file")
    q.add_argument("--send", action="store_true", help="also send it to SCIATIC_PACS_HOST (C-STORE)")
    p.set_defaults(handler=_cmd_export)

    p = commands.add_parser("outbox", help="results on their way to the PACS: list, retry, queue, send")
    box = p.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    q = box.add_parser("list", help="every queued object with its status, tries and last error")
    q.add_argument("--status", choices=["pending", "sent", "failed"], help="only objects with this status")
    q = box.add_parser("retry", help="queue failed objects again (all, or the given outbox ids)")
    q.add_argument("ids", nargs="*", type=int, metavar="ID")
    q = box.add_parser("queue", help="queue the SEG, SR and SC of segmentations (e.g. older ones) for the PACS")
    q.add_argument("segmentation_ids", nargs="+", type=int, metavar="SEGMENTATION_ID")
    box.add_parser("send", help="send every due object now (what the outbox DAG does every 5 minutes)")
    p.set_defaults(handler=_cmd_outbox)

    p = commands.add_parser("airflow", help="Airflow: create the pools the sciatic DAGs need")
    airflow = p.add_subparsers(dest="airflow_command", required=True, metavar="ACTION")
    q = airflow.add_parser("setup", help="create or update the `gpu` pool (safe to repeat)")
    q.add_argument("--gpu-slots", type=int, help="default SCIATIC_GPU_POOL_SLOTS (1)")
    p.set_defaults(handler=_cmd_airflow)

    p = commands.add_parser("run", help="the nightly job in this process: ingest, segment, measure, QC, labels")
    p.add_argument("--run-id", help="name this run in the audit trail")
    p.set_defaults(handler=_cmd_run)

    p = commands.add_parser("demo", help="the whole job on synthetic studies in a fresh folder (embedded database)")
    p.add_argument("--dir", default="demo", help="demo folder, replaced if it holds an earlier demo (default ./demo)")
    p.add_argument("--subjects", type=int, default=6)
    p.add_argument("--model", help="checkpoint to use (default: the shipped phantom model)")
    p.set_defaults(handler=_cmd_demo)

    p = commands.add_parser("qc", help="quality control: compare two masks, rater agreement, picture a segmentation")
    qc = p.add_subparsers(dest="qc_command", required=True, metavar="ACTION")
    q = qc.add_parser("compare", help="Dice, HD95, surface distance, volume similarity of two masks, as JSON")
    q.add_argument("prediction", help="mask NIfTI (e.g. a model's)")
    q.add_argument("label", help="mask NIfTI on the same grid (e.g. a rater's)")
    q = qc.add_parser("overlay", help="PNG of a segmentation over its montage (blue), manual label in red")
    q.add_argument("segmentation_id", type=int)
    q.add_argument("-o", "--output", required=True, help="PNG file")
    q.add_argument("--no-zoom", action="store_true", help="montage only, without the zoomed nerve panels")
    q = qc.add_parser("raters", help="agreement (pairwise Dice) of the raters who labelled a series, as JSON")
    q.add_argument("series_uid", help="SeriesInstanceUID (its newest converted version)")
    p.set_defaults(handler=_cmd_qc)

    p = commands.add_parser("report", help="self-contained HTML report of segmentations (a run or a date range)")
    p.add_argument("-o", "--output", required=True, help="HTML file")
    p.add_argument("--since", help="first day (YYYY-MM-DD) of segmentations to include")
    p.add_argument("--until", help="last day (YYYY-MM-DD), inclusive")
    p.add_argument("--model", type=int, help="only this model version")
    p.set_defaults(handler=_cmd_report)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
        logging.getLogger("highdicom").setLevel(logging.WARNING)  # it narrates every module it copies
        if args.command != "db":  # schema checks before each step are not news
            logging.getLogger("alembic").setLevel(logging.WARNING)
        if args.command == "demo":  # the demo prints its own story
            logging.getLogger("sciatic").setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except SciaticError as exc:
        print(f"sciatic: error: {exc}", file=sys.stderr)
        hint = recovery_hint(exc)
        if hint:
            print(f"sciatic: {hint}", file=sys.stderr)
        return 2
    except Exception as exc:
        from sqlalchemy.exc import OperationalError, SQLAlchemyError

        if not isinstance(exc, SQLAlchemyError):
            raise  # a bug: the traceback is what a developer needs
        # the database refused something the checks above did not foresee: one line, not a traceback
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        what = "cannot reach the database" if isinstance(exc, OperationalError) else "database error"
        print(f"sciatic: error: {what}: {reason}", file=sys.stderr)
        print("sciatic: Recovery: `sciatic db status` checks the connection and the schema", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
