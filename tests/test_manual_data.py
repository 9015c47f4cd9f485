"""CORe50, the ImageNet subsets and SALICON from miniature copies of the upstream layouts: CORe50's pickles,
zip and npz, ImageNet class folders in both accepted layouts, SALICON's image/map folders. Also the
six-part missing-dataset message and the memory-mapped writes these large datasets rely on."""

import hashlib
import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clcore import data
from clcore.cli import main
from clcore.data import core50, imagefolders
from clcore.data.prepared import stage_array, write_prepared
from clcore.scenarios import Scenario, get_benchmark
from test_real_data import md5

RNG = np.random.default_rng(1)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def write_image(path, array: np.ndarray, fmt: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


# --------------------------------------------------------------------------------------------------
# CORe50

def fake_core50(folder):
    """12 images (objects o1 and o6, sessions 1, 2 and test session 3, 2 frames each) in the upstream
    formats, and one NICv2-79 run with 3 training batches plus its test set."""
    folder.mkdir()
    paths = [f"s{s}/o{o}/C_{s:02d}_{o:02d}_{f:03d}.png" for s in (1, 2, 3) for o in (1, 6) for f in (0, 1)]
    images = RNG.integers(0, 256, (len(paths), 128, 128, 3), dtype=np.uint8)
    with zipfile.ZipFile(folder / "core50_128x128.zip", "w") as z:
        for path, image in zip(paths, images):
            z.writestr(f"core50_128x128/{path}", png(image))
    np.savez(folder / "core50_imgs.npz", x=images)
    row = {p: k for k, p in enumerate(paths)}
    batches = [[row["s1/o1/C_01_01_000.png"], row["s1/o1/C_01_01_001.png"], row["s1/o6/C_01_06_000.png"],
                row["s1/o6/C_01_06_001.png"]], [4, 5], [6, 7]]
    test = [8, 9, 10, 11]
    label = lambda rows: [float((int(paths[r].split("/o")[1].split("/")[0]) - 1)) for r in rows]  # floats upstream
    lup = {"nicv2_79": [batches + [test]]}
    labels = {"nicv2_79": [[label(b) for b in batches] + [label(test)]]}
    for name, obj in (("paths.pkl", paths), ("LUP.pkl", lup), ("labels.pkl", labels)):
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    with zipfile.ZipFile(folder / "batches_filelists_NICv2.zip", "w") as z:
        for k, rows in enumerate(batches):
            z.writestr(f"NIC_v2_79/run0/train_batch_{k:02d}_filelist.txt",
                       "".join(f"{paths[r]} {int(label([r])[0])}\n" for r in rows))
        z.writestr("NIC_v2_79/run0/test_filelist.txt", "".join(f"{paths[r]} 0\n" for r in test))
    return paths, images, batches, test


def core50_sources(tmp_path, folder, files):
    import yaml

    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"core50": {"files": {
        f: {"md5": md5(folder / f), "mirrors": [folder.as_uri() + "/"]} for f in files}}}))
    return sources


REQUIRED = ["core50_128x128.zip", "paths.pkl", "LUP.pkl", "labels.pkl"]
OPTIONAL = ["core50_imgs.npz", "batches_filelists_NICv2.zip"]


def test_core50_in_paths_order_with_batch_indices(tmp_path):
    paths, images, batches, test = fake_core50(tmp_path / "mirror")
    sources = core50_sources(tmp_path, tmp_path / "mirror", REQUIRED + OPTIONAL)
    meta = data.prepare("core50", tmp_path / "prepared", raw_dir=tmp_path / "raw", sources=sources, threads=2)
    loaded = data.load("core50", "all", tmp_path / "prepared")
    assert tuple(loaded["x"].shape) == (12, 3, 128, 128) and loaded["x"].dtype.is_floating_point is False
    assert np.array_equal(loaded["x"].numpy(), images.transpose(0, 3, 1, 2))  # PNG is lossless: exact pixels
    assert loaded["y"].tolist() == [0, 0, 5, 5] * 3 and loaded["category"].tolist() == [0, 0, 1, 1] * 3
    assert loaded["session"].tolist() == [1] * 4 + [2] * 4 + [3] * 4 and loaded["frame"].tolist() == [0, 1] * 6
    for k, rows in enumerate(batches):
        assert data.load_index("core50", f"nicv2_79/run0/batch{k:03d}", tmp_path / "prepared").tolist() == rows
    assert data.load_index("core50", "nicv2_79/run0/test", tmp_path / "prepared").tolist() == test
    assert data.load_index("core50", "nicv2_79/run0/test_reduced", tmp_path / "prepared").tolist() == test[::20]
    assert "decoded in paths.pkl order" in meta["images"]  # the optional npz was not placed, so not fetched
    assert not (tmp_path / "raw/core50/core50_imgs.npz").exists()
    assert data.verify_prepared(tmp_path / "prepared/core50") == []


def test_core50_prefers_a_placed_npz_and_checks_the_nicv2_filelists(tmp_path):
    paths, images, batches, _ = fake_core50(tmp_path / "mirror")
    raw = tmp_path / "raw/core50"
    raw.mkdir(parents=True)
    for name in OPTIONAL:
        (raw / name).write_bytes((tmp_path / "mirror" / name).read_bytes())
    sources = core50_sources(tmp_path, tmp_path / "mirror", REQUIRED + OPTIONAL)
    meta = data.prepare("core50", tmp_path / "prepared", raw_dir=tmp_path / "raw", sources=sources)
    assert meta["images"].startswith("core50_imgs.npz")
    assert np.array_equal(data.load("core50", "all", tmp_path / "prepared")["x"].numpy(), images.transpose(0, 3, 1, 2))
    assert "4 lists compared" in meta["checks"][0]
    assert not (raw / "core50_128x128.zip").exists()  # the npz made the 8 GB zip unnecessary

    with zipfile.ZipFile(raw / "batches_filelists_NICv2.zip", "w") as z:  # a list naming other images
        z.writestr("NIC_v2_79/run0/train_batch_01_filelist.txt", f"{paths[0]} 0\n{paths[1]} 0\n")
    sources = core50_sources(tmp_path, raw, OPTIONAL)
    sources.write_text(sources.read_text() + "".join(
        f"    {f}: {{md5: {md5(tmp_path / 'mirror' / f)}, mirrors: ['{(tmp_path / 'mirror').as_uri()}/']}}\n"
        for f in REQUIRED))
    with pytest.raises(ValueError, match="train_batch_01_filelist.txt and LUP.pkl"):
        data.prepare("core50", tmp_path / "prepared", raw_dir=tmp_path / "raw", sources=sources, force=True)


def test_core50_reduced_test_set_size_and_paths():
    assert len(range(44_972)[::core50.TEST_REDUCTION]) == 2_249  # ar1-pytorch's test_filelist_20.txt
    assert core50.parse_path("s11/o50/C_11_50_299.png") == (11, 49, 299)
    with pytest.raises(ValueError, match="not a CORe50 image path"):
        core50.parse_path("s1/o1/frame.png")


# --------------------------------------------------------------------------------------------------
# ImageNet subsets

WNIDS = ["n01943899", "n01753488"]  # label order of the class list, not sorted order


@pytest.fixture
def two_class_list(tmp_path, monkeypatch):
    folder = tmp_path / "classlists"
    folder.mkdir()
    (folder / "fg_imagenet.txt").write_text("".join(w + "\n" for w in WNIDS))
    monkeypatch.setattr(imagefolders, "CLASSLISTS", folder)
    monkeypatch.setattr(imagefolders, "FILELISTS", tmp_path / "no-filelists")


def fake_imagenet_tree(root, with_maps: bool):
    """images/{train,val}/<wnid>/ (layout a, with annotations/) or {train,val}/<wnid>/ (layout b)."""
    pixels = {}
    for split, names in (("train", ["b.JPEG", "a.JPEG"]), ("val", ["v.JPEG"])):
        for label, wnid in enumerate(WNIDS):
            for name in names:
                image = np.full((100, 120, 3), 40 * label + 10 * len(name) + (50 if name[0] == "b" else 0), np.uint8)
                folder = root / "images" / split if with_maps else root / split
                write_image(folder / wnid / name, image, "JPEG")
                pixels[(split, wnid, name)] = image
                if with_maps:
                    write_image(root / "annotations" / split / wnid / (name[:-5] + ".png"),
                                np.full((100, 120), 200 - 30 * label, np.uint8), "PNG")
    return pixels


def test_imagenet_subset_from_its_own_folder_with_saliency_maps(tmp_path, two_class_list):
    fake_imagenet_tree(tmp_path / "raw/fg-imagenet", with_maps=True)
    meta = data.prepare("fg-imagenet@288x384", tmp_path / "prepared", raw_dir=tmp_path / "raw", threads=2)
    train = data.load("fg-imagenet@288x384", "train", tmp_path / "prepared")
    test = data.load("fg-imagenet@288x384", "test", tmp_path / "prepared")
    assert tuple(train["x"].shape) == (4, 3, 288, 384) and tuple(train["sal"].shape) == (4, 1, 288, 384)
    assert train["y"].tolist() == [0, 0, 1, 1] and test["y"].tolist() == [0, 1]
    # label, then sorted file name: a.JPEG (grey 60) before b.JPEG (grey 110) within each class
    assert [int(v) for v in train["x"][:, 0].float().mean(dim=(1, 2)).round()] == [60, 110, 100, 150]
    assert [int(v) for v in train["sal"][:, 0].float().mean(dim=(1, 2)).round()] == [200, 200, 170, 170]
    assert meta["class_ids"] == WNIDS and meta["resize"]["filter"] == "lanczos"
    assert meta["source"][0]["layout"] == "a" and meta["deviations"] == []
    assert not list((tmp_path / "prepared/fg-imagenet@288x384").glob("*.staged"))


def test_imagenet_subset_from_a_full_imagenet_tree_resizes_like_pillow(tmp_path, two_class_list):
    pixels = fake_imagenet_tree(tmp_path / "raw/imagenet", with_maps=False)
    meta = data.prepare("fg-imagenet@256x256", tmp_path / "prepared", raw_dir=tmp_path / "raw")
    train = data.load("fg-imagenet@256x256", "train", tmp_path / "prepared")
    expected = Image.fromarray(pixels[("train", WNIDS[1], "a.JPEG")]).resize((256, 256), Image.Resampling.LANCZOS)
    decoded = np.asarray(Image.open(tmp_path / f"raw/imagenet/train/{WNIDS[1]}/a.JPEG").convert("RGB")
                         .resize((256, 256), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    assert np.array_equal(train["x"][2].numpy(), decoded) and abs(int(decoded.mean()) - int(np.mean(expected))) <= 2
    assert "sal" not in train and meta["source"][0]["layout"] == "b"
    assert "pseudo_saliency" in meta["deviations"][0]  # SER runs will need generated maps


def test_imagenet_subset_rejects_other_resolutions(tmp_path, two_class_list):
    with pytest.raises(ValueError, match="@288x384 or @256x256"):
        data.prepare("fg-imagenet@64x64", tmp_path / "prepared", raw_dir=tmp_path / "raw")


def six_parts(message: str) -> list[int]:
    """Positions of the six parts of docs/datasets.md#the-missing-data-message in a missing-dataset message
    (-1 where absent)."""
    parts = ["is needed by", "searched ", "expected layout:", "where to get it:", "then retry:",
             "default config/config.yaml runs on embedded datasets and needs no download"]
    return [message.find(p) for p in parts]


@pytest.mark.parametrize("name, layout_line, obtain", [
    ("fg-imagenet@288x384", "images/train/<wnid>/<file>.JPEG", "ImageNet-1k (ILSVRC2012)"),
    ("salicon@288x384", "maps/train/<same stem>.png", "SALICON challenge site"),
])
def test_missing_manual_dataset_says_what_to_put_where(tmp_path, two_class_list, name, layout_line, obtain):
    (tmp_path / "raw/imagenet/train").mkdir(parents=True)  # a partial tree is reported as such
    result = CliRunner().invoke(main, ["prepare", name, "--prepared-dir", tmp_path / "prepared",
                                       "--raw-dir", tmp_path / "raw"])
    assert result.exit_code == 2, result.output
    positions = six_parts(result.output)
    assert -1 not in positions and positions == sorted(positions), result.output
    assert f"dataset '{name}'" in result.output and layout_line in result.output and obtain in result.output
    assert str((tmp_path / "raw").resolve()) in result.output
    assert f"clcore prepare {name} --raw-dir {tmp_path / 'raw'}" in result.output
    if name.startswith("fg"):
        assert "4 of 4 class folders missing" in result.output  # layout (b) exists but lacks the classes


def test_class_lists_match_the_published_lists():
    expected = {"fg_imagenet.txt": "778d3068a4170c8a5cd8e832725a43e8e2021044b5d20f50f56374c905abbf8f",
                "mini_imagenet_ser.txt": "f9620ce9f0c5d4fabd5f73641e7f3f2d32df75ef9e083c93d9d9b5442f01d1a1",
                "aux_imagenet100.txt": "30a5c7550c3ff82c433761c2049917c0d7cef262eb3e45b2408dcdbd4bf5e647"}
    for name, sha in expected.items():
        assert hashlib.sha256((imagefolders.CLASSLISTS / name).read_bytes()).hexdigest() == sha
    fg, mini, aux = (set(imagefolders.read_classlist(n)) for n in expected)
    assert len(fg) == len(mini) == len(aux) == 100
    assert not fg & aux and len(mini & aux) == 11  # AUX is disjoint from FG (docs/datasets.md#class-lists)
    akr = imagefolders.read_classlist("imagenet_subset_akr.txt")  # ILSVRC2012's first 100 WNIDs, sorted
    assert hashlib.sha256((imagefolders.CLASSLISTS / "imagenet_subset_akr.txt").read_bytes()).hexdigest() == \
        "b332dbd149be58bd06982a583959d80f93d796938a70c0db0146a9e4fc9d661f"
    assert akr == sorted(set(akr)) and len(akr) == 100 and (akr[0], akr[-1]) == ("n01440764", "n01855672")


# --------------------------------------------------------------------------------------------------
# SALICON

def test_salicon_images_and_maps_resized_together_in_id_order(tmp_path):
    raw = tmp_path / "raw/salicon"
    for split, ids in (("train", [12, 3]), ("val", [7])):
        for k in ids:
            stem = f"COCO_{split}2014_{k:012d}"
            write_image(raw / "images" / split / f"{stem}.jpg", np.full((48, 64, 3), 5 * k, np.uint8), "JPEG")
            write_image(raw / "maps" / split / f"{stem}.png", np.full((48, 64), 10 * k, np.uint8), "PNG")
    data.prepare("salicon@24x32", tmp_path / "prepared", raw_dir=tmp_path / "raw")
    train = data.load("salicon@24x32", "train", tmp_path / "prepared")
    assert train["image_id"].tolist() == [3, 12] and tuple(train["x"].shape) == (2, 3, 24, 32)
    assert train["sal"][:, 0].float().mean(dim=(1, 2)).round().tolist() == [30.0, 120.0]
    assert data.load("salicon@24x32", "val", tmp_path / "prepared")["image_id"].tolist() == [7]


# --------------------------------------------------------------------------------------------------
# the prepared format for arrays larger than memory

def test_staged_memory_maps_are_moved_into_place_not_copied(tmp_path):
    out = tmp_path / "big"
    x = stage_array(out, "train", "x", (5, 3, 4, 4), np.uint8)
    x[:] = np.arange(5, dtype=np.uint8)[:, None, None, None]
    staged = out / "train.x.npy.staged"
    inode = staged.stat().st_ino
    meta = write_prepared(out, "big", {"train": {"x": x, "y": np.zeros(5, np.int16)}},
                          {"pixel_max": 255, "classes": []}, index={"s/run0/batch000": [4, 0]})
    assert (out / "train.x.npy").stat().st_ino == inode and not staged.exists()
    assert np.load(out / "train.x.npy")[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert meta["normalization_computed"]["mean"] == [round(2 / 255, 6)] * 3
    assert data.verify_prepared(out) == [] and meta["index"]["s/run0/batch000"]["n"] == 2
    (out / "index/s/run0/batch000.npy").write_bytes(b"corrupt")
    assert data.verify_prepared(out) == ["index/s/run0/batch000.npy"]


def test_tinyimagenet_half_uses_the_first_100_classes(tmp_path):
    images = {"x": np.zeros((400, 3, 64, 64), np.uint8), "y": np.repeat(np.arange(200, dtype=np.int16), 2)}
    write_prepared(tmp_path / "tinyimagenet", "tinyimagenet", {"train": images, "test": images},
                   {"pixel_max": 255, "classes": []})
    scenario = Scenario(get_benchmark("seq-tinyimg-half"), tmp_path)
    assert scenario.n_classes == 100 and int(scenario.train_y.max()) == 99 and len(scenario.test_y) == 200
    assert scenario.task(4).classes == tuple(range(80, 100)) and len(scenario.task(4).y) == 40


def test_online_er_ace_protocol(tmp_path):
    """One pass, batch 10, no augmentation, mean .5 / std 2, nf 20, ER-ACE task-free
    (docs/protocol.md#online-er-ace)."""
    from clcore.hparams import resolve

    hp = resolve("er_ace", "seq-cifar10-online", 1000, {}, "config/hparams")
    assert (hp["n_epochs"], hp["batch_size"], hp["minibatch_size"], hp["lr"], hp["task_free"]) == (1, 10, 10, 0.1, True)
    images = {"x": np.full((20, 3, 32, 32), 255, np.uint8), "y": np.repeat(np.arange(10, dtype=np.int16), 2)}
    write_prepared(tmp_path / "cifar10", "cifar10", {"train": images, "test": images}, {"pixel_max": 255, "classes": []})
    scenario = Scenario(get_benchmark("seq-cifar10-online"), tmp_path)
    x = scenario.transform.train(scenario.train_x[:2], torch.Generator().manual_seed(0))
    assert torch.allclose(x, torch.full_like(x, 0.25))  # (1 - .5) / 2 everywhere: no crop padding
    assert scenario.build_net().conv1.out_channels == 20
