"""comp prepare: every layout, the outputs, and each bad-input case."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from conftest import class_image, make_competition, write_image, zip_folder

from comp.prepare.layout import LayoutOverrides
from comp.prepare.folds import PrepareOptions, load_prepared, prepare
from comp.io import CompError


def run_prepare(data, workdir, **kw):
    overrides = kw.pop("overrides", None)
    return prepare(PrepareOptions(str(data), str(workdir), **kw), overrides)


def test_cifar_layout_from_zip(tmp_path, workdir):
    facts = make_competition(tmp_path / "cifar", "cifar", per_class=10)
    archive = zip_folder(tmp_path / "cifar", tmp_path / "cifar-10.zip")
    summary = run_prepare(archive, workdir, folds=5)
    assert summary["layout"]["kind"] == "csv + image folder"
    prepared = load_prepared(workdir)
    folds = prepared.folds
    assert list(folds.columns) == ["id", "path", "label", "fold", "source"]
    assert len(folds) == 30 and set(folds.source) == {"train"}
    # stratified: each fold holds 2 images of each of the 3 classes
    assert (folds.groupby(["fold", "label"]).size() == 2).all()
    assert list(prepared.test.id) == facts["test_ids"]  # sample submission order
    assert prepared.train_images.shape == (30, 16, 16, 3) and prepared.train_images.dtype == np.uint8
    assert isinstance(prepared.train_images, np.memmap)
    assert prepared.label_map.classes == ("cat", "dog", "frog")
    # the cached pixels are the decoded image of that row
    first = folds.iloc[0]
    from PIL import Image
    assert np.array_equal(np.asarray(Image.open(workdir / first.path).convert("RGB")), prepared.train_images[0])
    info = json.loads((workdir / "folds" / "prepare.json").read_text())
    assert info["images_per_class"] == {"cat": 10, "dog": 10, "frog": 10}
    assert info["sizes_seen"] == {"16x16": 30}


def test_rerun_gives_identical_folds(tmp_path, workdir):
    make_competition(tmp_path / "c", "cifar")
    run_prepare(tmp_path / "c", workdir, folds=3, seed=7)
    first = (workdir / "folds" / "folds.csv").read_text()
    run_prepare(tmp_path / "c", workdir, folds=3, seed=7)
    assert (workdir / "folds" / "folds.csv").read_text() == first
    run_prepare(tmp_path / "c", workdir, folds=3, seed=8)
    assert (workdir / "folds" / "folds.csv").read_text() != first


def test_train_and_val_parts_are_merged(tmp_path, workdir):
    facts = make_competition(tmp_path / "tiny", "parts", classes=range(4), per_class=12)
    summary = run_prepare(tmp_path / "tiny", workdir, folds=3)
    assert summary["layout"]["kind"] == "train+val parts"
    folds = load_prepared(workdir).folds
    assert summary["by_source"] == {"train": 36, "val": 12}
    assert set(folds.source) == {"train", "val"} and len(folds) == 48
    assert list(load_prepared(workdir).test.id) == facts["test_ids"]
    assert summary["layout"]["id_col"] == "Image" and summary["layout"]["label_col"] == "Class"


def test_class_folder_layout_with_odd_sample_columns(tmp_path, workdir):
    facts = make_competition(tmp_path / "flowers", "folders", classes=["rose", "tulip", "daisy"], per_class=6)
    summary = run_prepare(tmp_path / "flowers", workdir, folds=3)
    assert summary["layout"]["kind"] == "class-folders"
    assert summary["layout"]["sub_id_col"] == "filename" and summary["layout"]["sub_label_col"] == "category"
    prepared = load_prepared(workdir)
    assert prepared.label_map.classes == ("daisy", "rose", "tulip")
    assert list(prepared.test.id) == facts["test_ids"]
    (tmp_path / "flowers" / "train" / "lily").mkdir()  # a class folder with nothing in it
    with pytest.raises(CompError, match=r"class lily: has 0 images: train/lily/ holds no image files.*--skip-bad"):
        run_prepare(tmp_path / "flowers", workdir, folds=3)
    run_prepare(tmp_path / "flowers", workdir, folds=3, skip_bad=True)
    assert load_prepared(workdir).label_map.classes == ("daisy", "rose", "tulip")


def test_a_size_the_disk_cannot_hold_is_refused(tmp_path, workdir, capsys):
    make_competition(tmp_path / "data", "cifar", per_class=4, size=16)
    with pytest.raises(CompError, match=r"--size 200000: the image cache would take .* GB free; choose a smaller"):
        run_prepare(tmp_path / "data", workdir, folds=2, size=200_000)
    assert not (workdir / "folds").exists()
    run_prepare(tmp_path / "data", workdir, folds=2, size=64)
    assert "note: --size 64 enlarges images of at most 16px 4.0x" in capsys.readouterr().out


def test_labels_in_file_names_say_how_to_pass_them(tmp_path, workdir):
    """dogs-vs-cats: train/cat.0.jpg with no labels file. The error says what to do, and doing it works."""
    root = tmp_path / "dogscats"
    make_competition(root, "folders", classes=["cat", "dog"], per_class=6)
    for path in sorted((root / "train").rglob("*.png")):
        path.rename(root / "train" / f"{path.parent.name}.{path.name}")
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    with pytest.raises(CompError, match="its 12 images are not in class folders.*--train-csv"):
        run_prepare(root, workdir, folds=2)
    names = sorted(p.name for p in (root / "train").iterdir())
    pd.DataFrame({"id": names, "label": [n.split(".")[0] for n in names]}).to_csv(root / "labels.csv", index=False)
    summary = run_prepare(root, workdir, folds=2, overrides=LayoutOverrides(train_csv="labels.csv"))
    assert summary["images_per_class"] == {"cat": 6, "dog": 6}


def test_overrides_for_unusual_names(tmp_path, workdir):
    root = tmp_path / "odd"
    make_competition(root, "cifar")
    labels = pd.read_csv(root / "trainLabels.csv").rename(columns={"id": "picture", "label": "kind"})
    labels.to_csv(root / "annotations.csv", index=False)
    (root / "trainLabels.csv").unlink()
    (root / "train").rename(root / "pictures")
    with pytest.raises(CompError, match="no train image folder"):
        run_prepare(root, workdir)
    run_prepare(root, workdir, folds=2, overrides=LayoutOverrides(
        train_csv="annotations.csv", image_dir="pictures", id_col="picture", label_col="kind"))
    assert len(load_prepared(workdir).folds) == 30


def test_modes_and_sizes_are_normalised(tmp_path, workdir, capsys):
    root = tmp_path / "modes"
    make_competition(root, "cifar", per_class=4)
    rng = np.random.default_rng(1)
    write_image(root / "train" / "1.png", class_image(0, 3, 16, rng), mode="L")
    write_image(root / "train" / "2.png", class_image(1, 3, 16, rng), mode="RGBA")
    write_image(root / "train" / "3.png", class_image(2, 3, 16, rng), mode="P")
    write_image(root / "train" / "4.png", class_image(2, 3, 24, rng))  # a bigger one
    summary = run_prepare(root, workdir, folds=2)
    assert set(summary["modes_seen"]) == {"RGB", "L", "RGBA", "P"}
    assert summary["sizes_seen"]["24x24"] == 1
    assert load_prepared(workdir).train_images.shape[1:] == (16, 16, 3)
    capsys.readouterr()
    run_prepare(root, workdir, folds=2, size=8)
    assert load_prepared(workdir).train_images.shape[1:] == (8, 8, 3)
    assert "note: images will be cached at 8px, the previous preparation's at 16px" in capsys.readouterr().out


def test_default_size_is_the_common_short_side_or_the_median_of_mixed_ones_and_photos_are_cached_larger():
    from comp.prepare.cache import choose_size

    assert choose_size([(32, 32)] * 9 + [(40, 30)]) == (32, "the most common short side (9 of 10 images)")
    side, why = choose_size([(50 + 3 * i, 40 + 2 * i) for i in range(20)])  # photos: every size different
    assert side == 64 and why.startswith("sizes are mixed: the median short side (59px)")
    side, why = choose_size([(512, 384)] * 3)
    assert side == 160 and "photos are cached at 160px" in why and "`--size 384` keeps the detail, with 5.8x" in why
    assert choose_size([(512, 384)] * 3, cuda=True)[0] == 256
    side, why = choose_size([(200, 150)] * 3)  # larger than 128, smaller than the photo side: as it is
    assert side == 150 and "photos are cached as they are, up to 160px" in why
    assert choose_size([(80, 80), (72, 72), (88, 88)])[0] == 96  # a median of 80: halves round up
    side, _ = choose_size([(20, 12), (24, 30), (33, 33)])  # mixed and tiny: at least one step
    assert side == 32


def test_other_shapes_keep_their_aspect_the_centre_square_resized(tmp_path):
    from comp.prepare.cache import load_rgb

    pixels = np.zeros((20, 60, 3), np.uint8)  # 60 wide, 20 high: left third red, middle green, right blue
    pixels[:, :20, 0] = pixels[:, 20:40, 1] = pixels[:, 40:, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    cropped = load_rgb(tmp_path / "wide.png", 10, "crop")
    inner = cropped[:, 1:-1]  # the resize filter reads a pixel beyond the square at its two edges
    assert cropped.shape == (10, 10, 3) and (inner[..., 1] == 255).all() and inner[..., [0, 2]].max() == 0
    squashed = load_rgb(tmp_path / "wide.png", 10, "squash")  # comp's preparations before 2026-12-08
    assert squashed[:, 0, 0].min() == 255 and squashed[:, -1, 2].min() == 255


def test_mixed_sizes_are_cached_at_the_default_and_say_why(tmp_path, workdir):
    root = tmp_path / "photos"
    make_competition(root, "folders", per_class=4)
    rng = np.random.default_rng(2)
    for i, path in enumerate(sorted((root / "train").rglob("*.png"))):
        write_image(path, np.asarray(Image.fromarray(class_image(0, 3, 16, rng)).resize((40 + 9 * i, 30 + 11 * i))))
    summary = run_prepare(root, workdir, folds=2)
    assert summary["image_size"] == 96 and summary["image_size_reason"].startswith("sizes are mixed")
    assert summary["fit"] == "crop"
    assert load_prepared(workdir).train_images.shape[1:] == (96, 96, 3)  # median short side 89.5


def test_duplicates_are_reported(tmp_path, workdir):
    root = tmp_path / "dups"
    make_competition(root, "cifar", per_class=4)
    (root / "train" / "2.png").write_bytes((root / "train" / "1.png").read_bytes())
    summary = run_prepare(root, workdir, folds=2)
    assert summary["duplicates"]["train_duplicate_groups"] == 1


# ---------------------------------------------------------------- bad input

def _assert_nothing_written(workdir):
    assert not (workdir / "folds" / "folds.csv").exists()
    assert not (workdir / "folds" / "prepare.json").exists()
    leftovers = list((workdir / "folds").rglob(".*tmp*")) if (workdir / "folds").exists() else []
    assert leftovers == []


def test_truncated_image_names_the_file(tmp_path, workdir):
    root = tmp_path / "trunc"
    make_competition(root, "cifar", per_class=6, ext=".jpg")
    data = (root / "train" / "5.jpg").read_bytes()
    (root / "train" / "5.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(CompError, match=r"trainLabels.csv row 6 .*5\.jpg.*(truncated|unreadable)"):
        run_prepare(root, workdir, folds=3)
    _assert_nothing_written(workdir)
    summary = run_prepare(root, workdir, folds=3, skip_bad=True)
    assert summary["train_images"] == 17 and any("5.jpg" in d for d in summary["dropped"])
    assert "5" not in set(load_prepared(workdir).folds.id)


def test_unreadable_file_names_the_file(tmp_path, workdir):
    root = tmp_path / "garbage"
    make_competition(root, "cifar", per_class=6)
    (root / "train" / "3.png").write_bytes(b"not an image at all")
    with pytest.raises(CompError, match=r"row 4 .*3\.png.*unreadable"):
        run_prepare(root, workdir, folds=3)
    _assert_nothing_written(workdir)


def test_id_without_image(tmp_path, workdir):
    root = tmp_path / "missing"
    make_competition(root, "cifar", per_class=6)
    (root / "train" / "7.png").unlink()
    with pytest.raises(CompError, match=r"trainLabels.csv row 8: id '7' has no image file"):
        run_prepare(root, workdir, folds=3)
    _assert_nothing_written(workdir)
    assert run_prepare(root, workdir, folds=3, skip_bad=True)["train_images"] == 17


def test_image_without_label(tmp_path, workdir):
    root = tmp_path / "extra"
    make_competition(root, "cifar", per_class=6)
    write_image(root / "train" / "999.png", class_image(0, 3, 16, np.random.default_rng(0)))
    with pytest.raises(CompError, match=r"train/999.png: image has no label"):
        run_prepare(root, workdir, folds=3)
    assert run_prepare(root, workdir, folds=3, skip_bad=True)["train_images"] == 18


def test_label_in_val_missing_from_train(tmp_path, workdir):
    root = tmp_path / "val"
    make_competition(root, "parts", classes=range(3), per_class=12)
    val = pd.read_csv(root / "val.csv", dtype=str)
    val.loc[2, "Class"] = "42"
    val.to_csv(root / "val.csv", index=False)
    with pytest.raises(CompError, match=r"val.csv row 4: label '42' appears in val but not in train"):
        run_prepare(root, workdir, folds=3)
    assert run_prepare(root, workdir, folds=3, skip_bad=True)["num_classes"] == 3


def test_class_with_fewer_images_than_folds(tmp_path, workdir):
    root = tmp_path / "rare"
    make_competition(root, "cifar", per_class=6)
    labels = pd.read_csv(root / "trainLabels.csv", dtype=str)
    labels.loc[0, "label"] = "unicorn"
    labels.to_csv(root / "trainLabels.csv", index=False)
    with pytest.raises(CompError, match=r"class unicorn: has 1 image\(s\), fewer than --folds 3"):
        run_prepare(root, workdir, folds=3)
    summary = run_prepare(root, workdir, folds=3, skip_bad=True)
    assert "unicorn" not in summary["images_per_class"]


def test_duplicate_ids(tmp_path, workdir):
    root = tmp_path / "dupid"
    make_competition(root, "cifar", per_class=6)
    labels = pd.read_csv(root / "trainLabels.csv", dtype=str)
    labels.loc[5, "id"] = "2"
    labels.to_csv(root / "trainLabels.csv", index=False)
    with pytest.raises(CompError, match=r"row 7: duplicate id '2' \(also at trainLabels.csv row 3\)"):
        run_prepare(root, workdir, folds=3)


def test_a_third_copy_of_an_id_is_dropped_too(tmp_path, workdir):
    root = tmp_path / "dup3"
    make_competition(root, "cifar", per_class=6)
    labels = pd.read_csv(root / "trainLabels.csv", dtype=str)
    labels.loc[[5, 9], "id"] = "2"  # rows 3, 7 and 11 of the file all say id 2
    labels.to_csv(root / "trainLabels.csv", index=False)
    with pytest.raises(CompError, match=r"row 11: duplicate id '2' \(also at trainLabels.csv row 3\)"):
        run_prepare(root, workdir, folds=3)
    run_prepare(root, workdir, folds=3, skip_bad=True)
    assert list(load_prepared(workdir).folds.id).count("2") == 1


def test_class_folders_numbered_per_class_with_a_val_part(tmp_path, workdir):
    """cat/0.PNG and dog/0.PNG are two images, and so are train/cat/0.PNG and val/cat/0.PNG: ids keep them apart."""
    root = tmp_path / "numbered"
    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("val", 2)):
        for c, label in enumerate(("cat", "dog")):
            (root / part / label).mkdir(parents=True)
            for i in range(n):
                write_image(root / part / label / f"{i}.PNG", class_image(c, 2, 16, rng))
    (root / "test").mkdir()
    write_image(root / "test" / "t0.png", class_image(0, 2, 16, rng))
    pd.DataFrame({"id": ["t0.png"], "label": "cat"}).to_csv(root / "sample_submission.csv", index=False)
    summary = run_prepare(root, workdir, folds=2, overrides=LayoutOverrides(ext="png"))
    folds = load_prepared(workdir).folds
    assert len(folds) == 16 and folds.id.is_unique and summary["by_source"] == {"train": 12, "val": 4}
    assert {"cat/0", "dog/0", "val/cat/0"} <= set(folds.id)  # --ext: ids without it, any case


def test_zips_inside_the_competition_zip_are_extracted(tmp_path, workdir):
    root = tmp_path / "inner"
    make_competition(root, "cifar", per_class=6)
    for name in ("train", "test"):  # Kaggle's shape: train.zip holding train/, test.zip holding test/
        zip_folder(root, tmp_path / f"{name}.zip", only=name)
    zip_folder(root, tmp_path / "trainLabels.csv.zip", only="trainLabels.csv")
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("train.zip", "test.zip", "trainLabels.csv.zip"):
        (tmp_path / name).rename(shipped / name)
    (root / "sampleSubmission.csv").rename(shipped / "sampleSubmission.csv")
    with pytest.raises(CompError, match=r"pass it with --test-dir; test.zip, train.zip, trainLabels.csv.zip may hold"):
        run_prepare(shipped, workdir, folds=3)
    run_prepare(zip_folder(shipped, tmp_path / "comp.zip"), workdir, folds=3)
    assert len(load_prepared(workdir).folds) == 18


def test_a_changed_zip_is_extracted_again(tmp_path, workdir, capsys):
    make_competition(tmp_path / "v1", "cifar", per_class=6)
    archive = zip_folder(tmp_path / "v1", tmp_path / "comp.zip")
    run_prepare(archive, workdir, folds=3)
    run_prepare(archive, workdir, folds=3)
    assert "extracting it again" not in capsys.readouterr().out
    make_competition(tmp_path / "v2", "cifar", per_class=9)  # the competition's data updated, same file name
    zip_folder(tmp_path / "v2", archive)
    run_prepare(archive, workdir, folds=3)
    assert "differs from the zip extracted" in capsys.readouterr().out
    assert len(load_prepared(workdir).folds) == 27 and sorted(p.name for p in (workdir / "data").iterdir()) == [
        "comp", "comp.zip.json"]


def test_unreadable_csv_names_the_file(tmp_path, workdir):
    root = tmp_path / "emptycsv"
    make_competition(root, "cifar", per_class=6)
    (root / "sampleSubmission.csv").write_text("")
    with pytest.raises(CompError, match=r"sampleSubmission.csv: the file is empty"):
        run_prepare(root, workdir, folds=3)
    (root / "sampleSubmission.csv").write_bytes(b"id,label\n1,caf\xe9\n")  # cp1252, not UTF-8
    with pytest.raises(CompError, match=r"sampleSubmission.csv: cannot be read as a CSV \(UnicodeDecodeError"):
        run_prepare(root, workdir, folds=3)


def test_test_image_missing_is_always_fatal(tmp_path, workdir):
    root = tmp_path / "notest"
    make_competition(root, "cifar")
    (root / "test" / "3.png").unlink()
    with pytest.raises(CompError, match=r"sampleSubmission.csv row 4: test id '3' has no image file"):
        run_prepare(root, workdir, folds=3, skip_bad=True)


def test_missing_data_and_sample(tmp_path, workdir):
    with pytest.raises(CompError, match="no such file"):
        run_prepare(tmp_path / "nope.zip", workdir)
    root = tmp_path / "nosample"
    make_competition(root, "cifar")
    (root / "sampleSubmission.csv").unlink()
    with pytest.raises(CompError, match="no sample submission"):
        run_prepare(root, workdir)


def test_failed_prepare_leaves_the_previous_one_whole(tmp_path, workdir):
    root = tmp_path / "again"
    make_competition(root, "cifar", per_class=6, ext=".jpg")
    run_prepare(root, workdir, folds=3)
    before = {p.name: p.read_bytes() for p in (workdir / "folds").rglob("*") if p.is_file()}
    data = (root / "test" / "2.jpg").read_bytes()
    (root / "test" / "2.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(CompError, match=r"(?s)sampleSubmission.csv row 3 .*2\.jpg.*truncated.*test set must be complete"):
        run_prepare(root, workdir, folds=3, seed=9)
    after = {p.name: p.read_bytes() for p in (workdir / "folds").rglob("*") if p.is_file()}
    assert after == before  # no staging leftovers, nothing replaced
    load_prepared(workdir)


def test_class_order_does_not_depend_on_arrival_order():
    from comp.labels import build_label_map

    names = ["cat", "Cat", "1", "01", "10", "2"]
    orders = {build_label_map(perm).classes for perm in (names, names[::-1], sorted(names))}
    assert orders == {("01", "1", "2", "10", "Cat", "cat")}
