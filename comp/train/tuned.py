"""What `comp train --params` reads: a `comp tune` study's best trial (tune/<study>/best.json), checked against
the data it was tuned on, as train config fields. Here, below comp/tune/, because training reads it; comp tune
writes it (comp/tune/search.py, write_best)."""
from __future__ import annotations

import json
from pathlib import Path

from ..io import CompError, read_json
from .params import params_to_fields


def study_name(arch: str, fold: int) -> str:
    return f"{arch.replace('/', '_')}-fold{fold}"


def study_dir(workdir, study: str) -> Path:
    return Path(workdir) / "tune" / study.replace("/", "_")


def tuned_fields(workdir, arch: str, params: str = "best", study: str | None = None) -> dict:
    """TrainConfig fields from a study's best.json (`--params best [--params-from STUDY]`)
    or from a best.json path (`--params FILE`); `tuned_on` records the trial and its params."""
    if params != "best" and study:
        raise CompError("--params FILE and --params-from STUDY both given: pass one of them")
    if params == "best" and not study and arch is None:
        raise CompError("--params best reads the study of --arch A on fold 0: pass --arch, or --params-from STUDY")
    if params == "best":
        name = study or study_name(arch, 0)
        path = study_dir(workdir, name) / "best.json"
        if not path.exists():
            raise CompError(f"{path} not found: run `comp tune --arch {arch}` first"
                            f"{'' if study else ', or pick a study with --params-from STUDY'}")
    else:
        path = Path(params)
        if not path.is_file():
            raise CompError(f"--params {params}: expected 'best' or a best.json file")
    best = read_best(path)
    arch = arch or best["arch"]  # a named study or file says which net it tuned
    if best["arch"] != arch:
        raise CompError(f"{path} was tuned for --arch {best['arch']}, not {arch}; "
                        f"pass --arch {best['arch']} or tune {arch}")
    check_tuned_data(path, best, workdir)
    try:
        fields = params_to_fields(arch, best["params"])
    except CompError as exc:
        raise CompError(f"{path}: {exc}") from None
    print(f"params from {path} (trial {best.get('trial')}, val accuracy {best.get('value')}): {best['params']}")
    # the study's fold: retraining that fold with these params scores it on labels the choice saw
    tuned_on = {"study": best.get("study"), "trial": best.get("trial"), "fold": best.get("fold", 0),
                "value": best.get("value"), "params": best["params"],
                "folds_fingerprint": best.get("folds_fingerprint"), "file": str(path)}
    return {**fields, "arch": arch, "tuned_on": tuned_on}


def read_best(path: Path) -> dict:
    """A best.json of `comp tune`, its schema checked."""
    try:  # not read_json: its advice on damaged files is for comp's own
        best = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CompError(f"--params {path}: cannot read it as JSON ({exc}); expected a best.json that "
                        f"`comp tune` writes in tune/<study>/") from None
    if not (isinstance(best, dict) and isinstance(best.get("arch"), str) and isinstance(best.get("params"), dict)):
        raise CompError(f"--params {path}: not a best.json of `comp tune` (it needs \"arch\" and a \"params\" "
                        f"mapping); pass 'best', --params-from STUDY or tune/<study>/best.json")
    return best


def check_tuned_data(path: Path, best: dict, workdir) -> None:
    """Tuned params fit the data they were tuned on: the same fold split (else the tuned fold's rows, whose
    labels chose them, are spread over other folds' OOF rows) and image size (translate/cutout are px).
    A best.json from before these were recorded, or a workdir not prepared yet (training says so), passes."""
    from ..prepare.folds import current_split, folds_dir

    where = folds_dir(workdir)
    if best.get("folds_fingerprint") and (where / "folds.csv").exists():
        if current_split(workdir) != best["folds_fingerprint"]:
            raise CompError(f"{path}: study {best.get('study')} was tuned on another fold split than "
                            f"folds/folds.csv (prepared again with another --seed or --folds?), so fold "
                            f"{best.get('fold')}'s labels chose these params for rows now in other folds; tune "
                            f"again on this split (comp tune --arch {best['arch']} --study NEW_NAME)")
    size = read_json(where / "prepare.json").get("image_size") if (where / "prepare.json").exists() else None
    if best.get("image_size") and size and best["image_size"] != size:
        raise CompError(f"{path}: tuned on {best['image_size']}px images, but comp prepare made {size}px ones "
                        f"(translate and cutout are in px); tune again at this size")
