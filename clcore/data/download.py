"""Raw files of the real datasets: mirror lists, checksummed, retried and resumable downloads
(docs/datasets.md#mirrors-checksums-and-resumable-downloads).

Mirror lists live in `config/datasets.yaml` (dataset -> files -> md5 and mirrors), so a cluster can
point at a local copy and the tests at `file://` fixtures. A download streams to `<file>.part`, resumes
an interrupted `.part` with an HTTP Range request, verifies the checksum and only then renames. Nothing
here runs while Snakemake parses the DAG: only `clcore prepare` (the `prepare_dataset` local rule) calls it.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from ..errors import ChecksumError, DatasetMissingError
from .prepared import file_digests

DEFAULT_SOURCES = "config/datasets.yaml"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RawFile:
    name: str                  # file name under resources/raw/<dataset>/
    md5: str                   # the provider's checksum (torchvision's resource lists)
    mirrors: tuple[str, ...]   # base URLs, tried in order; the file name is appended
    optional: bool = False     # used if present (a faster source, a cross-check), never required


def load_sources(dataset: str, path=DEFAULT_SOURCES) -> list[RawFile]:
    entry = (yaml.safe_load(Path(path).read_text()) or {}).get(dataset)
    if not entry:
        raise KeyError(f"no raw files are listed for '{dataset}' in {path}")
    return [RawFile(name, spec["md5"], tuple(spec["mirrors"]), bool(spec.get("optional")))
            for name, spec in entry["files"].items()]


def downloaded_datasets(path=DEFAULT_SOURCES) -> list[str]:
    """Names of the datasets whose raw files are downloaded (listed in the mirror file)."""
    return list(yaml.safe_load(Path(path).read_text()) or {})


def fetch_all(dataset: str, raw_dir, sources=DEFAULT_SOURCES, download: bool = True, log=print) -> dict[str, str]:
    """Every required raw file of `dataset` into `<raw_dir>/<dataset>/`, verified: file name -> sha256."""
    listed = tuple(load_sources(dataset, sources))
    return {raw.name: fetch(raw, Path(raw_dir) / dataset, dataset, download, log=log, listed=listed)[1]
            for raw in listed if not raw.optional}


def fetch(raw: RawFile, raw_dir, dataset: str, download: bool = True, attempts: int = 3, log=print,
          needed_by: str = "clcore prepare", listed: tuple[RawFile, ...] = ()) -> tuple[Path, str]:
    """The verified local copy of `raw` in `raw_dir` (downloaded first if needed) and its sha256.
    `listed`: all raw files of the dataset, for the missing-file message."""
    raw_dir = Path(raw_dir)
    target = raw_dir / raw.name
    found = "missing"
    if target.exists():
        digests = file_digests(target, ("md5", "sha256"))
        if digests["md5"] == raw.md5:
            return target, digests["sha256"]
        log(f"{target}: md5 differs from {raw.md5}; downloading it again")
        found = f"bad checksum (md5 {digests['md5']}, expected {raw.md5}; deleted)"
        target.unlink()
    if not download:
        files = listed or (raw,)
        states = {f.name: found if f == raw else "present" if (raw_dir / f.name).exists() else "missing" for f in files}
        layout = f"{raw_dir.name}/\n" + "\n".join(f"  {f.name:<30} md5 {f.md5}{'  (optional)' * f.optional}"
                                                   for f in files)
        raise DatasetMissingError.manual(
            dataset, f"{needed_by} (downloads are off: --no-download)", raw_dir, states, layout,
            f"{raw.mirrors[0]}{raw.name} (and the others from the mirrors in {DEFAULT_SOURCES})",
            f"`clcore prepare {dataset} --raw-dir {raw_dir.parent}` (without --no-download it downloads itself)")
    raw_dir.mkdir(parents=True, exist_ok=True)
    part, errors = target.with_name(raw.name + ".part"), []
    for url in (base + raw.name for base in raw.mirrors):
        for attempt in range(1, attempts + 1):
            try:
                download_to(url, part, log)
                return _verified(part, target, raw.md5)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:  # drops, timeouts
                errors.append(f"{url} (try {attempt}): {err}")
                if attempt < attempts:
                    time.sleep(min(2 ** attempt, 30))
    raise DatasetMissingError(
        f"dataset '{dataset}': could not download {raw.name} from any mirror:\n  " + "\n  ".join(errors) +
        f"\nRetry later (the `.part` file resumes), or place {raw.name} (md5 {raw.md5}) in "
        f"{raw_dir.resolve()}/ by hand and run `clcore prepare {dataset} --raw-dir {raw_dir.parent}`.")


def download_to(url: str, part: Path, log=print) -> None:
    """Stream `url` into `part`, resuming an existing `part` where the server honours Range."""
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        resumed = done and getattr(response, "status", None) == 206
        size = response.headers.get("Content-Length")
        total = (int(size) + (done if resumed else 0)) if size else None
        log(f"downloading {url} ({_mb(total)} from {urlparse(url).netloc or 'local file'}"
            f"{f', resuming at {_mb(done)}' if resumed else ''})")
        with open(part, "ab" if resumed else "wb") as f:
            while block := response.read(_CHUNK):
                f.write(block)
    if total is not None and part.stat().st_size != total:
        raise OSError(f"{url}: got {part.stat().st_size} of {total} bytes")


def _verified(part: Path, target: Path, md5: str) -> tuple[Path, str]:
    digests = file_digests(part, ("md5", "sha256"))
    if digests["md5"] != md5:
        part.unlink()
        raise ChecksumError(f"{target.name}: md5 mismatch (expected {md5}, observed {digests['md5']}); the partial "
                            f"file was deleted. Retry, or check the mirror list in {DEFAULT_SOURCES}.")
    part.replace(target)
    return target, digests["sha256"]


def _mb(n) -> str:
    return "unknown size" if n is None else f"{n / 2**20:.1f} MB"
