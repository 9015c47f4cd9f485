"""Preparing the downloaded datasets from miniature archives fabricated in the providers' exact formats
(IDX gzip files, the CIFAR tarballs of latin-1 pickles), served from file:// and loopback HTTP mirrors."""

import gzip
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from clcore import data
from clcore.cli import main
from clcore.data.classic import CIFAR100_FINE_TO_COARSE, wscl_dream_labels
from clcore.data.download import RawFile, fetch
from clcore.errors import ChecksumError, DatasetMissingError

RNG = np.random.default_rng(0)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_sources(tmp_path, dataset, files, mirror=None) -> str:
    """A mirror list (config/datasets.yaml format) serving `files` from their folder."""
    mirror = mirror or files[0].parent.as_uri() + "/"
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({dataset: {"files": {f.name: {"md5": md5(f), "mirrors": [mirror]}
                                                           for f in files}}}))
    return sources


def idx_file(path, array: np.ndarray, magic: int):
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


def fake_mnist(folder):
    folder.mkdir()
    arrays = {}
    for split, n in (("train", 10), ("t10k", 4)):
        x, y = RNG.integers(0, 256, (n, 28, 28)), RNG.integers(0, 10, n)
        arrays[split] = (x, y)
        idx_file(folder / f"{split}-images-idx3-ubyte.gz", x, 2051)
        idx_file(folder / f"{split}-labels-idx1-ubyte.gz", y, 2049)
    return sorted(folder.iterdir()), arrays


def cifar_tarball(path, members: dict[str, dict]):
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def cifar_rows(n):
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8)


def test_mnist_from_idx_files(tmp_path):
    files, arrays = fake_mnist(tmp_path / "mirror")
    meta = data.prepare("mnist", tmp_path / "prepared", raw_dir=tmp_path / "raw",
                        sources=write_sources(tmp_path, "mnist", files))
    train, test = data.load("mnist", "train", tmp_path / "prepared"), data.load("mnist", "test", tmp_path / "prepared")
    assert tuple(train["x"].shape) == (10, 1, 28, 28) and tuple(test["x"].shape) == (4, 1, 28, 28)
    assert np.array_equal(train["x"][:, 0].numpy(), arrays["train"][0])  # provider order, values untouched
    assert train["y"].tolist() == arrays["train"][1].tolist() and test["y"].tolist() == arrays["t10k"][1].tolist()
    assert {s["name"] for s in meta["source"]} == {f.name for f in files}
    assert all(s["md5"] == md5(tmp_path / "raw/mnist" / s["name"]) for s in meta["source"])
    assert meta["pixel_max"] == 255 and meta["splits"]["train"]["fields"]["y"]["dtype"] == "int16"


def test_cifar10_batches_in_order_and_nchw(tmp_path):
    root = "cifar-10-batches-py"
    batches = [{"data": cifar_rows(4), "labels": RNG.integers(0, 10, 4).tolist()} for _ in range(5)]
    test = {"data": cifar_rows(3), "labels": [9, 0, 1]}
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    members = {f"{root}/data_batch_{k + 1}": b for k, b in enumerate(batches)}
    members.update({f"{root}/test_batch": test, f"{root}/batches.meta": {"label_names": names}})
    (tmp_path / "mirror").mkdir()
    archive = cifar_tarball(tmp_path / "mirror/cifar-10-python.tar.gz", members)
    meta = data.prepare("cifar10", tmp_path / "prepared", raw_dir=tmp_path / "raw",
                        sources=write_sources(tmp_path, "cifar10", [archive]))
    train = data.load("cifar10", "train", tmp_path / "prepared")
    assert tuple(train["x"].shape) == (20, 3, 32, 32) and train["x"].dtype.is_floating_point is False
    assert train["y"].tolist() == sum((b["labels"] for b in batches), [])  # batches 1..5 in order
    row = batches[1]["data"][2]  # train row 6: R plane = bytes 0..1023, row-major
    assert train["x"][6, 0, 0, 1] == row[1] and train["x"][6, 1, 2, 3] == row[1024 + 2 * 32 + 3]
    assert data.load("cifar10", "test", tmp_path / "prepared")["y"].tolist() == [9, 0, 1]
    assert meta["classes"] == names


def test_cifar100_fine_and_coarse_labels(tmp_path):
    root = "cifar-100-python"
    def split(n):
        fine = RNG.integers(0, 100, n)
        return {"data": cifar_rows(n), "fine_labels": fine.tolist(), "coarse_labels": CIFAR100_FINE_TO_COARSE[fine].tolist()}

    train, test = split(6), split(2)
    meta_pickle = {"fine_label_names": [f"f{k}" for k in range(100)], "coarse_label_names": [f"c{k}" for k in range(20)]}
    (tmp_path / "mirror").mkdir()
    archive = cifar_tarball(tmp_path / "mirror/cifar-100-python.tar.gz",
                            {f"{root}/train": train, f"{root}/test": test, f"{root}/meta": meta_pickle})
    meta = data.prepare("cifar100", tmp_path / "prepared", raw_dir=tmp_path / "raw",
                        sources=write_sources(tmp_path, "cifar100", [archive]))
    loaded = data.load("cifar100", "train", tmp_path / "prepared")
    assert loaded["y"].tolist() == train["fine_labels"] and loaded["coarse"].tolist() == train["coarse_labels"]
    assert len(meta["classes"]) == 100 and meta["coarse_classes"][3] == "c3"

    test["coarse_labels"][1] = (test["coarse_labels"][1] + 1) % 20  # not the CIFAR-100 release's table
    cifar_tarball(archive, {f"{root}/train": train, f"{root}/test": test, f"{root}/meta": meta_pickle})
    with pytest.raises(ValueError, match="test: 1 rows' coarse labels disagree with WSCL's fine->coarse table"):
        data.prepare("cifar100", tmp_path / "prepared", raw_dir=tmp_path / "raw2", force=True,
                     sources=write_sources(tmp_path, "cifar100", [archive]))


def test_wscl_dream_superclasses():
    assert np.bincount(CIFAR100_FINE_TO_COARSE, minlength=20).tolist() == [5] * 20  # 5 x 500 = 2,500 train images
    dream = wscl_dream_labels(np.arange(20))
    assert dream[[0, 7, 9, 10, 14, 17]].tolist() == [0, 7, 8, 9, 10, 11]
    assert (dream[[8, 11, 12, 13, 15, 16, 18, 19]] == -1).all() and (dream >= 0).sum() == 12


def test_corrupt_download_fails_its_checksum(tmp_path):
    files, _ = fake_mnist(tmp_path / "mirror")
    sources = write_sources(tmp_path, "mnist", files)
    listed = yaml.safe_load(sources.read_text())
    listed["mnist"]["files"]["train-images-idx3-ubyte.gz"]["md5"] = "0" * 32  # the mirror serves other bytes
    sources.write_text(yaml.safe_dump(listed))
    result = CliRunner().invoke(main, ["prepare", "mnist", "--prepared-dir", tmp_path / "prepared",
                                       "--raw-dir", tmp_path / "raw", "--sources", sources])
    assert result.exit_code == 3, result.output
    assert "md5 mismatch (expected 00000000" in result.output and md5(files[2]) in result.output
    assert not list((tmp_path / "raw/mnist").glob("train-images*"))  # the partial file is gone
    assert not (tmp_path / "prepared/mnist/meta.json").exists()


def test_missing_raw_file_without_download_says_what_to_put_where(tmp_path):
    files, _ = fake_mnist(tmp_path / "mirror")
    result = CliRunner().invoke(main, ["prepare", "mnist", "--prepared-dir", tmp_path / "prepared", "--raw-dir",
                                       tmp_path / "raw", "--sources", write_sources(tmp_path, "mnist", files),
                                       "--no-download"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "dataset 'mnist'" in message and str((tmp_path / "raw/mnist").resolve()) in message
    assert f"clcore prepare mnist --raw-dir {tmp_path / 'raw'}`" in message and "train-images-idx3-ubyte.gz: missing" in message
    assert f"md5 {md5(files[2])}" in message and "needs no download" in message


def test_prepare_is_idempotent_and_reuses_verified_raw_files(tmp_path):
    files, _ = fake_mnist(tmp_path / "mirror")
    kwargs = dict(raw_dir=tmp_path / "raw", sources=write_sources(tmp_path, "mnist", files))
    data.prepare("mnist", tmp_path / "prepared", **kwargs)
    stamp = (tmp_path / "prepared/mnist/train.x.npy").stat().st_mtime_ns
    for f in files:
        f.unlink()  # the mirror is gone: a rebuild must use the raw copies already verified
    data.prepare("mnist", tmp_path / "prepared", **kwargs)
    assert (tmp_path / "prepared/mnist/train.x.npy").stat().st_mtime_ns == stamp
    data.prepare("mnist", tmp_path / "prepared", force=True, **kwargs)
    assert (tmp_path / "prepared/mnist/train.x.npy").stat().st_mtime_ns != stamp


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves one in-memory file; honours `Range: bytes=N-` and can drop the first connection midway."""

    payload, drop_first, requests = b"", True, []

    def do_GET(self):
        start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
        RangeHandler.requests.append(start)
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if RangeHandler.drop_first:
            RangeHandler.drop_first = False
            self.wfile.write(body[: len(body) // 2])  # then the connection closes early
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_interrupted_download_resumes_from_the_part_file(tmp_path):
    payload = RNG.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    RangeHandler.payload, RangeHandler.drop_first, RangeHandler.requests = payload, True, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        raw = RawFile("blob.bin", hashlib.md5(payload).hexdigest(), (f"http://127.0.0.1:{server.server_port}/",))
        path, sha256 = fetch(raw, tmp_path, "blob", attempts=2, log=lambda *_: None)
    finally:
        server.shutdown()
        server.server_close()
    assert path.read_bytes() == payload and sha256 == hashlib.sha256(payload).hexdigest()
    assert RangeHandler.requests == [0, len(payload) // 2]  # the second request resumed where the first stopped


def test_unreachable_mirrors_fail_with_the_manual_route(tmp_path):
    raw = RawFile("x.gz", "0" * 32, ("file:///nonexistent/",))
    with pytest.raises(DatasetMissingError, match=r"(?s)could not download x\.gz from any mirror.*place x\.gz"):
        fetch(raw, tmp_path, "x", attempts=1, log=lambda *_: None)
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror/x.gz").write_bytes(b"abc")
    with pytest.raises(ChecksumError, match="expected 0{32}, observed " + hashlib.md5(b"abc").hexdigest()):
        fetch(RawFile("x.gz", "0" * 32, ((tmp_path / "mirror").as_uri() + "/",)), tmp_path / "raw", "x",
              log=lambda *_: None)


def jpeg(color, gray=False) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L" if gray else "RGB", (64, 64), color[0] if gray else color).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_tinyimagenet_label_order_file_order_and_grayscale(tmp_path):
    import zipfile

    root, wnids = "tiny-imagenet-200", ["n02124075", "n04067472"]  # wnids.txt order, not sorted order
    (tmp_path / "mirror").mkdir()
    archive = tmp_path / "mirror/tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"{root}/wnids.txt", "\n".join(wnids) + "\n")
        z.writestr(f"{root}/words.txt", "n02124075\tEgyptian cat\nn04067472\treel\nn00000001\tunused\n")
        for k in (10, 2):  # numeric order must win over the zip's and the lexical order
            z.writestr(f"{root}/train/n04067472/images/n04067472_{k}.JPEG", jpeg((20 * k, 0, 0)))
        z.writestr(f"{root}/train/n02124075/images/n02124075_0.JPEG", jpeg((0, 200, 0), gray=True))
        z.writestr(f"{root}/val/images/val_1.JPEG", jpeg((0, 0, 250)))
        z.writestr(f"{root}/val/images/val_0.JPEG", jpeg((250, 0, 0)))
        z.writestr(f"{root}/val/val_annotations.txt", "val_0.JPEG\tn04067472\t0\t0\t63\t63\n"
                                                    "val_1.JPEG\tn02124075\t0\t0\t63\t63\n")
    meta = data.prepare("tinyimagenet", tmp_path / "prepared", raw_dir=tmp_path / "raw",
                        sources=write_sources(tmp_path, "tinyimagenet", [archive]))
    train = data.load("tinyimagenet", "train", tmp_path / "prepared")
    test = data.load("tinyimagenet", "test", tmp_path / "prepared")
    assert tuple(train["x"].shape) == (3, 3, 64, 64) and train["y"].tolist() == [0, 1, 1]
    assert int(train["x"][1, 0].float().mean()) in range(35, 46) and int(train["x"][2, 0].float().mean()) > 190
    gray = train["x"][0].float().mean(dim=(1, 2))  # grayscale converted to three equal channels
    assert torch.allclose(gray, gray[0].expand(3))
    assert test["y"].tolist() == [1, 0] and int(test["x"][0, 0].float().mean()) > 240
    assert meta["class_ids"] == wnids and meta["classes"] == ["Egyptian cat", "reel"]
