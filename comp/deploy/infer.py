"""`comp infer` and the bundle's `predict`: new images -> the blend's labels, with no workdir and no network.

Every image is decoded by comp.prepare.cache.load_rgb, the decoder `comp prepare` used (same mode conversion,
same resize), normalised with each fold's own training statistics (comp.train.feed.Images), predicted with
the run's TTA (comp.train.feed.predict_logits), averaged over folds like `comp blend` averages test logits,
and blended by the bundle's fitted comp.ensemble.Blender. The CSV is checked by the validator
`comp blend` uses (comp.blend.submit.validate_submission).
"""
from __future__ import annotations

import shutil
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import ensemble
from ..blend.submit import validate_submission
from ..io import CompError, load_torch, path_inside, write_csv, write_npz
from ..labels import LabelMap, natural_sorted
from ..models import create_model
from ..prepare import staging
from ..prepare.cache import load_rgb, scan_headers
from ..prepare.image_files import IMAGE_EXTS, scan_images
from ..progress import progress
from ..train.checkpoint import load_weights
from ..train.feed import Images, in_batches, predict_logits
from .manifest import open_bundle

CHUNK = 4096  # images decoded and held at once (uint8), predicted in batches of batch_size


@dataclass
class InferOptions:
    bundle: str
    images: str
    ids: str | None = None
    out: str = "submission.csv"
    skip_bad: bool = False
    batch_size: int = 1024
    device: str = "auto"
    precision: str = "auto"
    logits: str | None = None  # also write ids, per-run logits and probabilities to this .npz


def infer(opts: InferOptions) -> Path:
    for flag, path in (("--out", opts.out), ("--logits", opts.logits)):  # before any work, not after it
        if path and Path(path).is_dir():
            raise CompError(f"{flag} {path}: is a folder; give a file path (e.g. {Path(path) / 'submission.csv'})")
    bundle = load_bundle(opts.bundle, opts.device, opts.precision)
    predictions = bundle.predict(opts.images, ids=opts.ids, skip_bad=opts.skip_bad, batch_size=opts.batch_size,
                                 keep_logits=bool(opts.logits))
    submission = bundle.submission(predictions, opts.ids)
    out = Path(opts.out)
    write_csv(out, submission)
    if opts.logits:
        write_npz(opts.logits, ids=predictions.id.to_numpy().astype(str), logits=bundle.logits,
                  runs=np.asarray(bundle.run_names, dtype=str),
                  probs=predictions[list(bundle.classes)].to_numpy(), classes=np.asarray(bundle.classes, dtype=str),
                  bad=np.asarray(bundle.bad, dtype=str))
        print(f"wrote {opts.logits}: ids, logits (runs x images x classes, before the blend), runs (the run of each "
              f"slice), probs, classes (the class of each column)")
    print(f"wrote {out} ({len(submission)} rows, columns {list(submission.columns)})")
    return out


class Bundle:
    """A loaded bundle: its models on the device, its blend, its label map and submission format."""

    def __init__(self, root: Path, spec: dict, device: str = "auto", precision: str = "auto"):
        from ..train.distributed import pick_device
        from ..train.trainer import pick_precision

        self.root, self.spec = root, spec
        self.label_map = LabelMap.load(root / "labels.json")
        self.device = pick_device(device)
        self.precision = pick_precision(precision, self.device)
        self.size = int(spec["decode"]["size"])
        self.blender = _blender(spec["blend"])
        self.prior = np.asarray(spec["blend"]["prior"], dtype=float)
        self.runs = [[(self._model(run, fold), fold) for fold in run["folds"]] for run in spec["runs"]]
        self.bad: list[str] = []  # ids given the prior class by the last predict(skip_bad=True)
        self.logits: np.ndarray | None = None  # (R, N, C) of the last predict(keep_logits=True), R: run_names

    def _model(self, run: dict, fold: dict):
        if run["label_hash"] != self.label_map.hash:
            raise CompError(f"{self.root / 'bundle.json'}: run {run['name']} was trained with label map "
                            f"{run['label_hash']}, the bundle's labels.json has {self.label_map.hash}")
        weights = path_inside(self.root, fold["file"], "bundle.json")
        state = load_torch(weights, map_location="cpu", weights_only=True, then="export the bundle again")
        model = create_model(run["arch"], num_classes=run["num_classes"], in_chans=3, img_size=run["img_size"],
                             **run["model_kwargs"])
        load_weights(model, state, weights)  # bf16 tensors (--half) are copied into fp32
        return model.to(self.device).to(memory_format=torch.channels_last).eval()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label_map.classes

    def predict(self, images, ids=None, skip_bad: bool = False, batch_size: int = 1024,
                keep_logits: bool = False) -> pd.DataFrame:
        """images: a folder or .zip of image files, or a list of paths. ids: a CSV (the sample submission)
        whose id column gives the rows and their order. -> DataFrame: id, label (as the submission writes
        it), one probability column per class. keep_logits: also keep self.logits (see run_logits)."""
        if batch_size < 1:
            raise CompError(f"--batch-size {batch_size}: give a positive number of images a forward pass")
        staging.remove_stale_temp_dirs("infer")  # what a killed infer left (SIGTERM and Ctrl-C clean up)
        with _scratch("infer") as tmp:
            table = image_table(images, self.spec["submission"]["id_from"], tmp)
            if ids is not None:
                table = order_by_ids(table, ids, self.spec["submission"]["id_col"], images)
            self._report_unseen(table.path.tolist())
            probs, logits, bad = self._predict_paths(table.path.tolist(), batch_size, skip_bad, keep_logits)
            # the bundled runs' slices only: the blend's runs it gives no weight are not in the bundle
            self.logits = None if logits is None else logits[[run["blend_index"] for run in self.spec["runs"]]]
        self.bad = [table.id.iloc[i] for i in bad]
        if bad:
            label = self.label_map.format(self.classes[int(self.prior.argmax())])
            print(f"--skip-bad: {len(bad)} image(s) could not be decoded and got the prior class {label!r}: "
                  f"{', '.join(table.path.iloc[i] for i in bad[:10])}{' ...' if len(bad) > 10 else ''}")
        frame = pd.DataFrame({"id": table.id.to_numpy(), "label": self.label_map.decode(probs.argmax(1))})
        return pd.concat([frame, pd.DataFrame(probs, columns=list(self.classes))], axis=1)

    @property
    def run_names(self) -> list[str]:
        return [run["name"] for run in self.spec["runs"]]

    def run_logits(self, images, ids=None, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(ids, logits (R, N, C)): each bundled run's TTA logits averaged over its folds, before the blend, in
        the order of run_names; the counterpart of the test logits `comp blend` reads from runs/ (an
        undecodable image is an error). Runs the blend gives no weight are not bundled, so not here."""
        predictions = self.predict(images, ids, batch_size=batch_size, keep_logits=True)
        return predictions.id.to_numpy(), self.logits

    def _predict_paths(self, paths: list[str], batch_size: int, skip_bad: bool, keep_logits: bool):
        n, n_classes = len(paths), len(self.classes)
        probs, bad = np.zeros((n, n_classes)), []
        logits = np.zeros((self.blender.n_runs, n, n_classes), np.float32) if keep_logits else None
        bar = progress(total=n, desc="infer", unit="img")
        for start in range(0, n, CHUNK):
            chunk = paths[start:start + CHUNK]
            pixels, chunk_bad = self._decode(chunk, skip_bad)
            good = start + np.setdiff1d(np.arange(len(chunk)), chunk_bad)
            if len(good):
                chunk_logits = self._run_logits(pixels[good - start], batch_size)
                probs[good] = self.blender.predict(chunk_logits)
                if keep_logits:
                    logits[:, good] = chunk_logits
            for i in chunk_bad:
                probs[start + i] = self.prior  # its logits stay 0
            bad += [start + i for i in chunk_bad]
            bar.update(len(chunk))
        bar.close()
        return probs, logits, bad

    def _decode(self, paths: list[str], skip_bad: bool) -> tuple[np.ndarray, list[int]]:
        pixels, bad = np.zeros((len(paths), self.size, self.size, 3), np.uint8), []
        for i, path in enumerate(paths):
            try:
                pixels[i] = load_rgb(path, self.size, self.spec["decode"].get("fit", "squash"))
            except Exception as exc:  # PIL raises many types for broken files
                if not skip_bad:
                    raise CompError(f"{path}: cannot be decoded ({exc}); fix or remove it, or pass --skip-bad to "
                                    f"give it the prior class and list it") from None
                bad.append(i)
        return pixels, bad

    def _run_logits(self, pixels: np.ndarray, batch_size: int) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (R, N, C): each run's fold logits averaged, as `comp blend` averages them."""
        # runs the blend gives no weight are not in the bundle: their rows stay 0, which the blend ignores
        per_run = np.zeros((self.blender.n_runs, len(pixels), len(self.classes)), np.float32)
        for models, run in zip(self.runs, self.spec["runs"]):
            fold_logits = []
            for model, fold in models:
                images = Images(pixels, self.device, fold["mean"], fold["std"])
                tta = fold.get("tta", run["tta"])  # older bundles kept one TTA per run
                fold_logits.append(predict_logits(model, in_batches(images, batch_size), tta, self.device,
                                                  self.precision))
            per_run[run["blend_index"]] = np.mean(fold_logits, axis=0)
        return per_run

    def _report_unseen(self, paths: list[str]) -> None:
        """The documented fallback for sizes and modes training never saw: the same conversion, and a note."""
        decode = self.spec["decode"]
        headers = scan_headers(paths, "checking headers")
        sizes, modes = headers.sizes, headers.modes
        if headers.turned:
            print(f"note: {headers.turned_note('of these')}")
        seen_sizes, seen_modes = set(decode["sizes_seen"]), set(decode["modes_seen"])
        mixed = (decode.get("distinct_sizes") or 0) > len(seen_sizes)  # mixed sizes in training: all resized
        odd_sizes = Counter() if mixed else Counter(f"{s[0]}x{s[1]}" for s in sizes
                                                    if s and f"{s[0]}x{s[1]}" not in seen_sizes)
        odd_modes = Counter(m for m in modes if m and m not in seen_modes)
        if odd_sizes or odd_modes:
            print(f"note: {_some(odd_sizes, 'size')}{' and ' if odd_sizes and odd_modes else ''}"
                  f"{_some(odd_modes, 'mode')} never seen in training; they are converted as `comp prepare` "
                  f"converted training images (to RGB, resized to {self.size}x{self.size})")

    def submission(self, predictions: pd.DataFrame, ids=None) -> pd.DataFrame:
        """The rows in the competition's format (header, id column, labels as written), validated."""
        fmt = self.spec["submission"]
        id_col, label_col = fmt["id_col"], fmt["label_col"]
        if ids is not None:
            sample = pd.read_csv(ids, dtype=str, keep_default_na=False)
        elif len(fmt["columns"]) == 2:  # in the sample's column order, whichever comes first
            sample = pd.DataFrame({c: predictions.id if c == id_col else "" for c in fmt["columns"]})
        else:
            raise CompError(f"the sample submission has columns {fmt['columns']}: pass --ids sample_submission.csv "
                            f"so the other columns are copied")
        out = sample.copy()
        out[label_col] = predictions.label.to_numpy()
        validate_submission(out, ids if ids is not None else sample, self.label_map, id_col, label_col)
        return out


@contextmanager
def _scratch(prefix: str):
    """A temporary folder named with this process's pid (staging.temp_dir), removed on the way out."""
    folder = staging.temp_dir(prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def image_table(images, id_from: str, scratch: Path) -> pd.DataFrame:
    """id, path of every image: a folder's image files, a .zip's (extracted into scratch), or a list."""
    if isinstance(images, (list, tuple)):
        paths = [Path(p) for p in images]
        source = "the list of images"
    else:
        source = str(images)
        folder = Path(images)
        if folder.is_file() and zipfile.is_zipfile(folder):
            with zipfile.ZipFile(folder) as z:
                z.extractall(scratch)  # extractall drops '..' and absolute parts of member names
            folder = scratch
        elif not folder.is_dir():
            raise CompError(f"--images {images}: not a folder or a .zip of images")
        paths, left_out = scan_images(folder)  # the rule comp prepare applies: any depth, nothing hidden
        if left_out:
            print(left_out.note(source, folder))
    if not paths:
        raise CompError(f"{source}: no image files ({', '.join(sorted(IMAGE_EXTS))}) found")
    ids = [p.name if id_from == "name" else p.stem for p in paths]
    table = pd.DataFrame({"id": ids, "path": [str(p) for p in paths]})
    dup = table[table.id.duplicated(keep=False)]
    if len(dup):
        raise CompError(f"{source}: files {', '.join(dup.path.head(4))} give the same id {dup.id.iloc[0]!r}")
    order = {image_id: i for i, image_id in enumerate(natural_sorted(ids))}
    return table.iloc[np.argsort([order[i] for i in ids], kind="stable")].reset_index(drop=True)


def order_by_ids(table: pd.DataFrame, ids_csv, id_col: str, images) -> pd.DataFrame:
    """The rows of --ids, in its order; every id needs an image (images without an id are left out)."""
    ids_csv = Path(ids_csv)
    if not ids_csv.exists():
        raise CompError(f"--ids {ids_csv}: file not found")
    wanted = pd.read_csv(ids_csv, dtype=str, keep_default_na=False)
    if id_col not in wanted.columns:
        raise CompError(f"{ids_csv}: no column {id_col!r} (the bundle's id column); columns: {list(wanted.columns)}")
    wanted_ids = wanted[id_col].str.strip()
    # ids as this CSV writes them: with the extension (30.png) or without (30), whatever the bundle's sample did
    forms = [table.set_index("id").path] + [pd.Series(table.path.to_numpy(), index=[key(Path(p)) for p in table.path])
                                            for key in (lambda p: p.name, lambda p: p.stem)]
    by_id = max((form for form in forms if form.index.is_unique), key=lambda form: wanted_ids.isin(form.index).sum())
    missing = wanted_ids[~wanted_ids.isin(by_id.index)]
    if len(missing):
        rows = ", ".join(f"row {i + 2} ({v!r})" for i, v in missing.head(5).items())
        raise CompError(f"{ids_csv}: {len(missing)} id(s) have no image in {images}: {rows}"
                        f"{' ...' if len(missing) > 5 else ''}")
    extra = len(table) - wanted_ids.nunique()
    if extra:
        print(f"note: {extra} image(s) in {images} have no row in {ids_csv} and are not predicted")
    return pd.DataFrame({"id": wanted[id_col].to_numpy(), "path": by_id.loc[wanted_ids].to_numpy()})


def _blender(spec: dict) -> ensemble.Blender:
    """The fitted blend from bundle.json (numbers only: no pickled objects travel in a bundle)."""
    stacker = None
    if spec.get("stacker"):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        s = spec["stacker"]
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.var_ = (np.asarray(s[k], dtype=float) for k in ("mean", "scale", "var"))
        scaler.n_features_in_ = len(scaler.mean_)
        clf = LogisticRegression()
        clf.coef_, clf.intercept_ = np.asarray(s["coef"], dtype=float), np.asarray(s["intercept"], dtype=float)
        clf.classes_, clf.n_features_in_ = np.asarray(s["classes"]), clf.coef_.shape[1]
        stacker = ensemble.StackModel(scaler, clf, s["n_runs"], s["n_classes"])
    array = lambda key: None if spec.get(key) is None else np.asarray(spec[key])  # noqa: E731
    return ensemble.Blender(spec["method"], spec["combine_method"], spec["n_runs"], spec["n_classes"],
                            array("keep").astype(int), array("weights"), array("temperatures"), stacker,
                            spec["learned"])


def _some(counts: Counter, what: str, shown: int = 3) -> str:
    """'12 images of 5 sizes (640x480: 8, 320x240: 1, 800x600: 1, ...)': photos come in many sizes."""
    if not counts:
        return ""
    listed = ", ".join(f"{k}: {n}" for k, n in counts.most_common(shown))
    more = ", ..." if len(counts) > shown else ""
    images, kinds = sum(counts.values()), len(counts)
    return f"{images} image{'s' * (images != 1)} of {kinds} {what}{'s' * (kinds != 1)} ({listed}{more})"


def load_bundle(path, device: str = "auto", precision: str = "auto"):
    """A bundle (folder or .zip) ready to predict: `load_bundle(p).predict("test_images/")` -> DataFrame."""
    root, spec = open_bundle(path)
    return Bundle(root, spec, device, precision)
