"""Check a submission the way Kaggle's parser does, then send it with the Kaggle API.

`kaggle` is imported only when `comp submit` or `comp download` calls the API (`_kaggle_api`): importing it authenticates (and may call
the network), which neither `comp blend` nor a test should do.
"""
from __future__ import annotations

import os
import shlex
import zipfile
from pathlib import Path

import pandas as pd

from ..io import read_input_csv
from ..io import CompError, read_json
from ..labels import LabelMap
from ..prepare.folds import prepared_dir, sample_submission_path

def credential_help(then: str) -> str:
    return ("no Kaggle credentials: export KAGGLE_API_TOKEN=<token from kaggle.com/settings/api>, or save the token "
            "to ~/.kaggle/access_token, or run `kaggle auth login` (legacy: ~/.kaggle/kaggle.json, or KAGGLE_USERNAME "
            f"and KAGGLE_KEY); then {then}")


CREDENTIAL_HELP = credential_help("run comp submit again (--dry-run validates without them)")


def validate_submission(submission, sample_path, label_map: LabelMap, id_col: str, label_col: str) -> pd.DataFrame:
    """Header, row count, id set, empty cells and label set, each with the row that fails.
    `submission` and `sample_path` are CSV paths or DataFrames (`comp infer` builds its sample); id_col and
    label_col name the sample's columns (prepare found them by name: other columns are the sample's own)."""
    name = str(submission) if not isinstance(submission, pd.DataFrame) else "submission"
    frame = submission if isinstance(submission, pd.DataFrame) else _read(submission)
    sample = sample_path if isinstance(sample_path, pd.DataFrame) else _read(sample_path)
    if list(frame.columns) != list(sample.columns):
        raise CompError(f"{name}: header {list(frame.columns)} differs from the sample's {list(sample.columns)}")
    if len(frame) != len(sample):
        raise CompError(f"{name}: {len(frame)} rows, the sample has {len(sample)}")
    empty = frame.eq("").any(axis=1)
    if empty.any():
        row = int(empty.to_numpy().argmax())
        raise CompError(f"{name}: row {row + 2} has an empty cell: {frame.iloc[row].to_dict()}")
    dup = frame[id_col].duplicated()
    if dup.any():
        row = int(dup.to_numpy().argmax())
        raise CompError(f"{name}: row {row + 2} repeats id {frame[id_col].iloc[row]!r}")
    missing = set(sample[id_col]) - set(frame[id_col])
    if missing:
        raise CompError(f"{name}: {len(missing)} id(s) of the sample are missing, e.g. {sorted(missing)[:3]}")
    known = label_map.written_names()
    unknown = ~frame[label_col].isin(known)
    if unknown.any():
        row = int(unknown.to_numpy().argmax())
        raise CompError(f"{name}: row {row + 2} has label {frame[label_col].iloc[row]!r}, not a class of "
                        f"folds/labels.json (e.g. {sorted(known)[:5]}); was an index written instead of a name?")
    return frame


def _read(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise CompError(f"{path}: file not found")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
        if len(names) != 1:
            raise CompError(f"{path}: a zip with {len(names)} files ({', '.join(names[:3])}"
                            f"{' ...' if len(names) > 3 else ''}); Kaggle takes a zip of exactly one CSV")
    return read_input_csv(path, dtype=str, keep_default_na=False)


def kaggle_command(csv_path: Path, blend_result: dict | None = None, competition: str = "<competition>") -> str:
    """The shell command that sends the file, quoted so a path with spaces survives a paste."""
    return (f"kaggle competitions submit {competition} -f {shlex.quote(str(csv_path))} "
            f"-m {shlex.quote(default_message(blend_result))}")


def default_message(blend_result: dict | None) -> str:
    if not blend_result:
        return "comp submission"
    label_use = blend_result.get("oof_labels_used")
    return (f"comp blend {blend_result.get('method')}: OOF accuracy {blend_result['accuracy']:.4f}, "
            f"macro-F1 {blend_result['macro_f1']:.4f}" + (f" (optimistic: {label_use})" if label_use else ""))


def blend_record(csv_path: Path) -> dict | None:
    """The blend result `comp blend` wrote beside the CSV (same name, .json); None for any other file there."""
    try:
        record = read_json(csv_path.with_suffix(".json"))
    except (OSError, ValueError, CompError):
        return None
    blend = record.get("blend") if isinstance(record, dict) else None
    return blend if isinstance(blend, dict) and {"accuracy", "macro_f1"} <= blend.keys() else None


def has_credentials(environ=os.environ, home: Path | None = None) -> bool:
    if environ.get("KAGGLE_API_TOKEN") or (environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY")):
        return True
    config_dir = Path(environ.get("KAGGLE_CONFIG_DIR") or (home or Path.home()) / ".kaggle")
    return any((config_dir / f).exists() for f in ("access_token", "kaggle.json", "credentials.json"))


def submit(csv_path, competition: str, message: str | None = None, dry_run: bool = False, workdir=".") -> None:
    csv_path, workdir = Path(csv_path), Path(workdir)
    folds = prepared_dir(workdir)  # the label set and the sample come from the preparation
    prepare_info = read_json(folds / "prepare.json")
    label_map = LabelMap.load(folds / "labels.json")
    layout = prepare_info["layout"]
    validate_submission(csv_path, sample_submission_path(workdir), label_map, layout["sub_id_col"],
                        layout["sub_label_col"])
    message = message or default_message(blend_record(csv_path))
    print(f"{csv_path}: valid ({prepare_info['test_images']} rows, labels from folds/labels.json)")
    if dry_run:
        print(f"dry run: not sent. Would submit to {competition} with message {message!r}")
        return
    if not has_credentials():
        raise CompError(CREDENTIAL_HELP)
    api = _kaggle_api(CREDENTIAL_HELP)
    try:
        api.competition_submit(str(csv_path), message, competition)
    except Exception as exc:  # the API raises HTTP errors of its own types
        raise CompError(f"kaggle did not take the submission to {competition!r} ({exc}); check the name, accept the "
                        f"competition's rules on its Kaggle page, and the day's submission limit") from None
    print(f"submitted {csv_path} to {competition}: {message}")


def _kaggle_api(help_text: str):
    """An authenticated KaggleApi. kaggle exits the process (SystemExit) on credentials it cannot use."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # lazy: importing kaggle authenticates

        api = KaggleApi()
        api.authenticate()
    except (SystemExit, Exception) as exc:
        raise CompError(f"kaggle could not log in ({exc or 'it exited'}): the credentials found are not usable. "
                        f"{help_text}") from None
    return api


def download(competition: str, path=".") -> Path:
    """The competition's files as one zip, for `comp prepare --data`."""
    if not has_credentials():
        raise CompError(credential_help(f"run comp download {competition} again"))
    api = _kaggle_api(credential_help(f"run comp download {competition} again"))
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        api.competition_download_files(competition, path=str(folder), quiet=False)
    except Exception as exc:  # the API raises HTTP errors of its own types (403: rules not accepted)
        raise CompError(f"kaggle could not download {competition!r} ({exc}); check the name, and accept the "
                        f"competition's rules on its Kaggle page (403 means they are not accepted yet)") from None
    archive = folder / f"{competition}.zip"
    if not archive.exists():
        raise CompError(f"kaggle reported success but {archive} is not there; files in {folder}: "
                        f"{sorted(p.name for p in folder.iterdir())[:10]}")
    print(f"downloaded {archive} ({archive.stat().st_size / 1e6:.1f} MB); next:\n  comp prepare --data {archive}")
    return archive
