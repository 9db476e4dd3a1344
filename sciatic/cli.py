"""The ``sciatic`` command: thin argument parsing over the library modules.

Each sub-command parses its arguments and calls one function elsewhere; no
logic lives here. ``main(argv=None)`` returns the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from sciatic import __version__
from sciatic.errors import SciaticError

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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
    return 0


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

    p = commands.add_parser("qc", help="quality control: compare two masks")
    qc = p.add_subparsers(dest="qc_command", required=True, metavar="ACTION")
    q = qc.add_parser("compare", help="Dice, HD95, surface distance, volume similarity of two masks, as JSON")
    q.add_argument("prediction", help="mask NIfTI (e.g. a model's)")
    q.add_argument("label", help="mask NIfTI on the same grid (e.g. a rater's)")
    p.set_defaults(handler=_cmd_qc)

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
    handler: Handler = args.handler
    try:
        return handler(args)
    except SciaticError as exc:
        print(f"sciatic: error: {exc}", file=sys.stderr)
        hint = recovery_hint(exc)
        if hint:
            print(f"sciatic: {hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
