"""Official pretrained weights: manifest, cache, resumable download, hash checks, and a CLI.

    python -m engine.weights list
    python -m engine.weights download NAME [NAME ...]     # or: download --default | download --all
    python -m engine.weights verify [NAME ...]

Cache: ``$MICROMOTION_HOME/weights`` (``MICROMOTION_HOME`` defaults to ``~/.cache/micromotion``).

Hashes: none of the publishers below publishes a sha256 (or any checksum) for these files. A file without a
published hash gets its sha256 recorded at its first complete download in ``weights/hashes.json``; every later
``verify`` (and every re-download) is checked against that record ("trust on first use"). A published hash, where
an entry has one, always wins over a recorded one.

Google Drive: most files are hosted on Google Drive. Large Drive files answer the plain ``uc?export=download``
link with an HTML "can't scan this file for viruses" page; the downloader reads that page's download form (or
its ``confirm=`` token) and follows it, at most twice. If Drive still answers with a page (quota exceeded,
link withdrawn) the error says so and names the file's page to download it by hand.

Tests and mirrors: every URL can be overridden, by ``download(..., url=...)``, by ``base_url`` /
``--base-url`` / ``$MICROMOTION_WEIGHTS_BASE_URL`` (fetches ``BASE/<filename>``).

This module imports only the standard library and tqdm (no torch).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import html
import http.client
import json
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

ENV_HOME = "MICROMOTION_HOME"
ENV_BASE_URL = "MICROMOTION_WEIGHTS_BASE_URL"
HASHES_FILE = "hashes.json"
CHUNK = 1 << 20

_NOT_PUBLISHED = "not published by the publisher: recorded at first download, checked by `verify` ever after"
_NC = "NVIDIA Source Code License-NC (StyleGAN2 weights; non-commercial use only)"


def _drive(file_id: str) -> str:
    """Direct-download URL of a Google Drive file id (the id-based ``uc?export=download`` form)."""
    return f"https://drive.google.com/uc?export=download&id={file_id}"


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable file.

    name:        short name used by loaders and the CLI (e.g. "e4e-ffhq").
    filename:    file name in the cache.
    url:         official download URL (Drive files: id-based direct link).
    page:        where a human can download it (the link the publisher's README gives).
    source:      which README lists this link.
    approx_size_mb: approximate size in MB (1e6 bytes); the publishers do not state sizes, so this is derived
                 from the parameter count (float32) unless `size_note` says otherwise.
    license:     licence of the weights as far as their publishers state it.
    purpose:     what the product uses the file for.
    kind:        "generator" | "encoder" | "identity" | "direction".
    sha256:      pinned sha256 (lower-case hex): published by the publisher, or (micromotion directions) checked
                 against the repository's git blob; None when none is known before the first download.
    sha256_note: where the hash comes from, or that none is published.
    other_sources: other places the same network is published (informational; never fetched automatically,
                 since their bytes may differ from the official file).
    """

    name: str
    filename: str
    url: str
    page: str
    source: str
    approx_size_mb: float
    license: str
    purpose: str
    kind: str
    sha256: str | None = None
    sha256_note: str = _NOT_PUBLISHED
    size_note: str = "approximate, from the parameter count (float32)"
    other_sources: tuple[str, ...] = field(default_factory=tuple)


def _from_drive(file_id: str, **fields) -> WeightsEntry:
    """Entry of a Google Drive file: `url` is its direct-download link, `page` its viewer page (same id)."""
    return WeightsEntry(url=_drive(file_id), page=f"https://drive.google.com/file/d/{file_id}/view", **fields)


# The paper's official precomputed directions (`pregen_latents/<name>/d_latent`), pinned to one commit.
MICROMOTION_REPO = "wuqiuche/micromotion-styleGAN"
MICROMOTION_COMMIT = "d4ff949b0d08814f49603850bb50a98346905a7b"
MICROMOTION_RAW = f"https://raw.githubusercontent.com/{MICROMOTION_REPO}/{MICROMOTION_COMMIT}/pregen_latents"
_MICROMOTION_LICENSE = (
    f"MIT ({MICROMOTION_REPO}, Copyright (c) 2022 Qiucheng Wu); derived from the FFHQ StyleGAN2 generator "
    f"({_NC})"
)
#: official direction name -> (sha256 of the file, git blob id prefix) at MICROMOTION_COMMIT.
_MICROMOTION_DIRECTIONS: dict[str, tuple[str, str]] = {
    "smile": ("f91b21a9c9bf17b49799e873c1864118d9e72510769c112e8e553aca1d6a3fd4", "8a80c9c7b8d3"),
    "angry": ("5132218d645ef613a9148958c5286cb8b879f60c6a3145a753639f304a38f9ff", "ca311b602e41"),
    "aging": ("b00d9bb8ab03da8d63c1b0bea89bf7e2da7c36d0a049ba10c56c7432e865fdaf", "615d9fefc410"),
    "eyesClose": ("8d73d5175eb69fd1797fc1e6fb632d2dd51689877b0dd0241f8be2f92b6aa0fd", "2a21063d636a"),
    "headsTurn": ("00452120b2d87dd79ac05557238970abcbdf6157819283c260944912e5e80c61", "799bffd01431"),
}


def _micromotion_direction(official: str) -> WeightsEntry:
    """Manifest entry of one official direction file (torch.save of a [1, 18, 512] float32 tensor, 37624 bytes)."""
    sha256, blob = _MICROMOTION_DIRECTIONS[official]
    path = f"pregen_latents/{official}/d_latent"
    return WeightsEntry(
        name=f"micromotion-{official}",
        filename=f"micromotion-{official}.d_latent.pt",
        url=f"{MICROMOTION_RAW}/{official}/d_latent",
        page=f"https://github.com/{MICROMOTION_REPO}/blob/{MICROMOTION_COMMIT}/{path}",
        source=f"{MICROMOTION_REPO} at commit {MICROMOTION_COMMIT}, {path} (used by its main.py --category {official})",
        approx_size_mb=37624 / 1e6,
        size_note="exactly 37624 bytes",
        license=_MICROMOTION_LICENSE,
        purpose="official micromotion direction (W+ delta) for the FFHQ generator",
        kind="direction",
        sha256=sha256,
        sha256_note=f"sha256 verified against the repository's git blob at that commit: blob {blob}…",
    )


MANIFEST: dict[str, WeightsEntry] = {
    e.name: e
    for e in (
        _from_drive(
            "1EM87UquaoQmk17Q8d5kYIAHqu0dkYqdT",
            name="stylegan2-ffhq",
            filename="stylegan2-ffhq-config-f.pt",
            source="READMEs of orpatashnik/StyleCLIP, omertov/encoder4editing, yuval-alaluf/restyle-encoder, "
                   "eladrich/pixel2style2pixel ('FFHQ StyleGAN', rosinality format)",
            approx_size_mb=133.0,
            size_note="g_ema alone is 33.2 M float32 values (133 MB); the file may also hold the training "
                      "generator/discriminator",
            license=_NC + "; converted to rosinality format by rosinality/stylegan2-pytorch (MIT code)",
            purpose="StyleGAN2 config-f FFHQ 1024 generator (rosinality layout): the decoder every edit renders with",
            kind="generator",
            other_sources=(
                "wuqiuche/micromotion-styleGAN README 'Generator': "
                "https://drive.google.com/file/d/1TaFSoIwbajdqYVlXMvD48XqaP4j2Xjy-/view",
            ),
        ),
        WeightsEntry(
            name="stylegan2-ffhq-pkl",
            filename="stylegan2-ada-pytorch-ffhq.pkl",
            url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
            page="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/",
            source="NVlabs/stylegan2-ada-pytorch README, 'Data repository' (ffhq.pkl: FFHQ 1024, original StyleGAN2)",
            approx_size_mb=364.0,
            size_note="approximate: G, D and G_ema of config-f",
            license=_NC,
            purpose="the same FFHQ generator as an NVIDIA network pickle (read with engine.nvidia_pkl, no code run)",
            kind="generator",
            other_sources=(
                "NVlabs/stylegan3 README (NGC): https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/"
                "versions/1/files/stylegan2-ffhq-1024x1024.pkl",
            ),
        ),
        _from_drive(
            "1cUv_reLE6k3604or78EranS7XzuVMWeO",
            name="e4e-ffhq",
            filename="e4e_ffhq_encode.pt",
            source="omertov/encoder4editing README, 'FFHQ Inversion'",
            approx_size_mb=1201.0,
            license="MIT (encoder4editing code); the embedded decoder is StyleGAN2 FFHQ (" + _NC + ")",
            purpose="e4e encoder (image -> W+, editable inversions); default live encoder",
            kind="encoder",
        ),
        _from_drive(
            "1sw6I2lRIB0MpuJkpc8F5BJiSZrc0hjfE",
            name="restyle-psp-ffhq",
            filename="restyle_psp_ffhq_encode.pt",
            source="yuval-alaluf/restyle-encoder README, 'FFHQ - ReStyle + pSp'",
            approx_size_mb=955.0,
            license="MIT (restyle-encoder code); the embedded decoder is StyleGAN2 FFHQ (" + _NC + ")",
            purpose="ReStyle-pSp iterative encoder (the inverter micromotion uses); default live encoder",
            kind="encoder",
            other_sources=(
                "wuqiuche/micromotion-styleGAN README 'Inverter': "
                "https://drive.google.com/file/d/1r5KSlQhf93fUllwqid80p4fxlzdR5A3f/view",
            ),
        ),
        _from_drive(
            "1e2oXVeBPXMQoUoC_4TNwAWpOPpSEhE_e",
            name="restyle-e4e-ffhq",
            filename="restyle_e4e_ffhq_encode.pt",
            source="yuval-alaluf/restyle-encoder README, 'FFHQ - ReStyle + e4e'",
            approx_size_mb=955.0,
            size_note="approximate: assumed the size of ReStyle-pSp (same IR-SE50 backbone and decoder)",
            license="MIT (restyle-encoder code); the embedded decoder is StyleGAN2 FFHQ (" + _NC + ")",
            purpose="ReStyle-e4e iterative encoder",
            kind="encoder",
        ),
        _from_drive(
            "1bMTNWkh5LArlaWSc_wa8VKyq2V42T2z0",
            name="psp-ffhq",
            filename="psp_ffhq_encode.pt",
            source="eladrich/pixel2style2pixel README, 'StyleGAN Inversion'",
            approx_size_mb=1200.0,
            size_note="approximate: assumed the size of e4e (same GradualStyle heads, IR-SE50 and decoder)",
            license="MIT (pixel2style2pixel code); the embedded decoder is StyleGAN2 FFHQ (" + _NC + ")",
            purpose="pSp encoder (image -> W+)",
            kind="encoder",
        ),
        _from_drive(
            "1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn",
            name="arcface-ir-se50",
            filename="model_ir_se50.pth",
            source="READMEs of eladrich/pixel2style2pixel, omertov/encoder4editing, yuval-alaluf/restyle-encoder "
                   "('IR-SE50 Model', taken from TreB1eN/InsightFace_Pytorch)",
            approx_size_mb=175.0,
            license="MIT (TreB1eN/InsightFace_Pytorch); trained on MS-Celeb-1M (research use)",
            purpose="ArcFace IR-SE50 face recognition network for the identity loss",
            kind="identity",
        ),
        WeightsEntry(
            name="fairface-res34",
            filename="res34_fair_align_multi_7_20190809.pt",
            url=_drive("113QMzQzkBDmYMs9LwzvD-jxEZdBQ5J4X"),
            page="https://drive.google.com/drive/folders/1B2gAnEpJ6oC9sMkcwS8v5Wk8PtHycHOV",
            source="dchen236/FairFace README ('Download our models' links the Drive folder above, which holds "
                   "res34_fair_align_multi_7_20190809.pt); the README names no file id: the url's id is the one "
                   "downstream projects download this file by (not checked against the folder here: offline)",
            approx_size_mb=85.0,
            license="CC BY 4.0 (FairFace README)",
            purpose="FairFace ResNet-34 (race 7, gender 2, age 9 logits): age and gender scorer of "
                    "`python -m directions eval --scorer fairface`",
            kind="attribute",
        ),
        *(_micromotion_direction(name) for name in _MICROMOTION_DIRECTIONS),
    )
}

#: Manifest names of the official directions, in the paper's order. `python -m directions install-official`
#: downloads them and writes them as direction files; they are not in DEFAULT_NAMES (a raw d_latent in the
#: weights cache is not a usable direction by itself).
MICROMOTION_DIRECTION_NAMES: tuple[str, ...] = tuple(f"micromotion-{n}" for n in _MICROMOTION_DIRECTIONS)

#: What `download --default` fetches: the generator and the live encoders used by default.
DEFAULT_NAMES: tuple[str, ...] = ("stylegan2-ffhq", "e4e-ffhq", "restyle-psp-ffhq")


# ---------------------------------------------------------------------------------------------- errors


class WeightsError(RuntimeError):
    """Base class for download / cache / hash problems (message: one line, cause and fix)."""


class MissingWeightsError(FileNotFoundError):
    """A known weights name whose file is not in the cache yet. `command` is the exact command to fetch it."""

    def __init__(self, name: str, path: Path):
        self.name = name
        self.path = Path(path)
        self.command = f"python -m engine.weights download {name}"
        super().__init__(f"weights '{name}' are not downloaded (expected at {path}); run: {self.command}")


class UnknownWeightsError(FileNotFoundError):
    """Neither an existing file nor a manifest name."""


class DownloadError(WeightsError):
    """Server unreachable, HTTP error, or a web page instead of the file."""


class HashMismatchError(WeightsError):
    """The downloaded bytes do not have the expected sha256 (the file was discarded)."""


class CacheNotWritableError(WeightsError):
    """The cache directory cannot be created or written."""


# ---------------------------------------------------------------------------------------------- paths


def home() -> Path:
    """`$MICROMOTION_HOME`, default `~/.cache/micromotion`."""
    value = os.environ.get(ENV_HOME)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "micromotion"


def cache_dir() -> Path:
    """Folder holding the weights files and `hashes.json`."""
    return home() / "weights"


def entry(name: str) -> WeightsEntry:
    """Manifest entry of `name`; unknown → UnknownWeightsError listing the known names."""
    try:
        return MANIFEST[name]
    except KeyError:
        raise UnknownWeightsError(
            f"unknown weights name '{name}'; known names: {', '.join(MANIFEST)} (or pass a path to a file)"
        ) from None


def path_for(name: str) -> Path:
    """Cache path of a manifest name (whether or not it exists)."""
    return cache_dir() / entry(name).filename


def name_for_path(path: str | os.PathLike) -> str | None:
    """Manifest name whose cached file is `path` (or whose file name matches), else None."""
    p = Path(path)
    for name, e in MANIFEST.items():
        if p.name == e.filename:
            return name
    return None


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith(".") or text.startswith("~") or bool(Path(text).suffix)


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Path of a weights file given a path or a manifest name.

    An existing path is returned as is. A manifest name returns its cached file when present, else raises
    MissingWeightsError (message holds `python -m engine.weights download NAME`). A missing path raises
    FileNotFoundError; anything else UnknownWeightsError listing the known names.
    """
    text = os.fspath(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.is_file():
        return candidate
    if text in MANIFEST:
        cached = path_for(text)
        if cached.is_file():
            return cached
        raise MissingWeightsError(text, cached)
    if _looks_like_path(text):
        raise FileNotFoundError(f"weights file not found: {text}; check the path, or use one of: {', '.join(MANIFEST)}")
    entry(text)  # raises UnknownWeightsError
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------- hashes


def sha256_file(path: str | os.PathLike) -> str:
    """Lower-case hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _hashes_path() -> Path:
    return cache_dir() / HASHES_FILE


def recorded_hashes() -> dict[str, dict]:
    """{filename: {"sha256", "recorded_at", "url"}} from `hashes.json` (empty when absent)."""
    path = _hashes_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"cannot read {path} ({err}); fix or delete it (it only holds recorded hashes)") from err
    return data if isinstance(data, dict) else {}


def _record_hash(filename: str, digest: str, url: str) -> Path:
    path = _hashes_path()
    data = recorded_hashes()
    data[filename] = {
        "sha256": digest,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "url": url,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def expected_sha256(name: str) -> tuple[str | None, str]:
    """(expected sha256 or None, origin) with origin in {"published", "recorded", "none"}."""
    e = entry(name)
    if e.sha256:
        return e.sha256.lower(), "published"
    rec = recorded_hashes().get(e.filename)
    if rec and rec.get("sha256"):
        return rec["sha256"].lower(), "recorded"
    return None, "none"


# ---------------------------------------------------------------------------------------------- download


@dataclass
class DownloadResult:
    """What `download` did. status: "downloaded" | "present"; hash_origin: published | recorded | new-record."""

    name: str
    path: Path
    status: str
    sha256: str
    hash_origin: str
    bytes_fetched: int = 0


def _ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise CacheNotWritableError(
            f"weights cache {folder} is not writable ({reason}); set {ENV_HOME} to a writable folder"
        ) from err


def _url_for(e: WeightsEntry, url: str | None, base_url: str | None) -> str:
    if url:
        return url
    base = base_url or os.environ.get(ENV_BASE_URL)
    if base:
        return base.rstrip("/") + "/" + urllib.parse.quote(e.filename)
    return e.url


class _HtmlInsteadOfFile(Exception):
    def __init__(self, page: str, next_url: str | None):
        super().__init__(next_url or "web page")
        self.page = page
        self.next_url = next_url


def _confirm_url(page: str, url: str) -> str | None:
    """Follow-up URL from a Google-Drive-style confirmation page (download form or `confirm=` link)."""
    form = re.search(r"<form[^>]*id=\"download-form\"[^>]*>(.*?)</form>", page, re.S | re.I) or re.search(
        r"<form[^>]*>(.*?)</form>", page, re.S | re.I
    )
    if form:
        action = re.search(r"action=\"([^\"]+)\"", form.group(0), re.I)
        inputs = re.findall(r"<input[^>]*type=\"hidden\"[^>]*>", form.group(1), re.I)
        params = []
        for tag in inputs:
            n = re.search(r"name=\"([^\"]*)\"", tag)
            v = re.search(r"value=\"([^\"]*)\"", tag)
            if n:
                params.append((html.unescape(n.group(1)), html.unescape(v.group(1) if v else "")))
        if action and params:
            target = urllib.parse.urljoin(url, html.unescape(action.group(1)))
            return target + ("&" if "?" in target else "?") + urllib.parse.urlencode(params)
    token = re.search(r"confirm=([0-9A-Za-z_\-]+)", page)
    if token:
        parts = urllib.parse.urlsplit(url)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "confirm"]
        query.append(("confirm", token.group(1)))
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    return None


def _open(opener, url: str, offset: int, timeout: float):
    headers = {"User-Agent": "micromotion-weights/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_into(opener, url: str, part: Path, timeout: float, progress: bool, desc: str) -> tuple[int, str]:
    """One attempt: append to `part` from its current size (Range), or restart if the server ignores Range.

    Returns (bytes received in this attempt, final URL). Raises _HtmlInsteadOfFile, urllib errors, OSError.
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(opener, url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # range starts at/after the end: the .part may already be complete
            total = re.search(r"/(\d+)", err.headers.get("Content-Range", "") or "")
            if total and int(total.group(1)) == offset:
                return 0, url
            log.info("server refused the resume range; restarting %s from 0", part.name)
            part.unlink()
            return _fetch_into(opener, url, part, timeout, progress, desc)
        raise
    with resp:
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("text/html"):
            page = resp.read(2_000_000).decode("utf-8", "replace")
            raise _HtmlInsteadOfFile(page, _confirm_url(page, resp.geturl()))
        status = getattr(resp, "status", 200)
        mode = "ab"
        if offset and status != 206:
            log.info("server ignored the Range request; restarting %s from 0", part.name)
            offset, mode = 0, "wb"
        elif offset:
            start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                log.info("server answered an unexpected range; restarting %s from 0", part.name)
                resp.close()
                part.unlink()
                return _fetch_into(opener, url, part, timeout, progress, desc)
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        from tqdm import tqdm

        received = 0
        with open(part, mode) as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
            disable=not progress, leave=False,
        ) as bar:
            while True:
                try:
                    block = resp.read(CHUNK)
                except http.client.IncompleteRead as err:  # keep what arrived, then let the caller resume
                    out.write(err.partial)
                    raise
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.update(len(block))
        if total is not None and part.stat().st_size < total:
            raise http.client.IncompleteRead(b"", total - part.stat().st_size)
        return received, resp.geturl()


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        inner = err.reason
        return getattr(inner, "strerror", None) or str(inner)
    if isinstance(err, http.client.IncompleteRead):
        return "connection closed before the end of the file"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def download(
    name: str,
    *,
    url: str | None = None,
    base_url: str | None = None,
    force: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
) -> DownloadResult:
    """Download a manifest entry into the cache, resumably, and check/record its sha256.

    url / base_url: override the manifest URL (tests, mirrors). force: download again even if present.
    retries: extra attempts after a connection dropped mid-transfer (each resumes from the `.part` file); a server
    that cannot be reached at all fails at once.
    Errors (one line each): DownloadError (unreachable / HTTP / web page), HashMismatchError (file discarded),
    CacheNotWritableError (names the folder and MICROMOTION_HOME).
    """
    e = entry(name)
    folder = cache_dir()
    _ensure_writable(folder)
    dest = folder / e.filename
    expected, origin = expected_sha256(name)
    if dest.is_file() and not force:
        return DownloadResult(name, dest, "present", expected or "", origin)

    src = _url_for(e, url, base_url)
    part = dest.with_name(dest.name + ".part")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    current, hops, attempt, fetched = src, 0, 0, 0
    while True:
        try:
            got, _ = _fetch_into(opener, current, part, timeout, progress, e.filename)
            fetched += got
            break
        except _HtmlInsteadOfFile as page:
            if page.next_url and hops < 2:
                hops += 1
                log.info("following the download-confirmation page for %s", e.filename)
                current = page.next_url
                continue
            if part.exists() and part.stat().st_size == 0:
                part.unlink()
            raise DownloadError(
                f"{src} answered with a web page instead of {e.filename} (download quota exceeded or link "
                f"moved); download it in a browser from {e.page} and save it as {dest}"
            ) from None
        except urllib.error.HTTPError as err:
            raise DownloadError(
                f"download of {e.filename} failed: {_reason(err)} from {current}; try later, or save the file "
                f"from {e.page} as {dest}"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError) as err:
            # URLError comes from connecting (offline, refused, DNS): fail at once with one line. Errors while
            # reading the body (dropped connection, stalled transfer) are retried, resuming from the .part file.
            if attempt < retries and not isinstance(err, urllib.error.URLError):
                attempt += 1
                log.warning("download of %s interrupted (%s); retry %d/%d", e.filename, _reason(err), attempt, retries)
                time.sleep(min(0.5 * attempt, 5.0))
                continue
            host = urllib.parse.urlsplit(current).netloc
            kept = f" (partial file kept: {part}, the next run resumes)" if part.exists() else ""
            raise DownloadError(
                f"cannot download {e.filename}: {host} unreachable ({_reason(err)}); check the network "
                f"connection and run the command again{kept}"
            ) from None
        except OSError as err:
            raise CacheNotWritableError(
                f"cannot write {part} ({_reason(err)}); free space or set {ENV_HOME} to a writable folder"
            ) from err

    digest = sha256_file(part)
    if expected and digest != expected:
        part.unlink()
        raise HashMismatchError(
            f"sha256 of the downloaded {e.filename} is {digest}, expected {expected} ({origin}); the file was "
            f"discarded. Run the download again; if it persists the server file differs from the official one"
        )
    os.replace(part, dest)
    if expected:
        return DownloadResult(name, dest, "downloaded", digest, origin, fetched)
    _record_hash(e.filename, digest, current)
    return DownloadResult(name, dest, "downloaded", digest, "new-record", fetched)


# ---------------------------------------------------------------------------------------------- verify


@dataclass
class VerifyResult:
    """status: "ok" | "mismatch" | "missing" | "unrecorded" (present, no hash known: now recorded)."""

    name: str
    path: Path
    status: str
    expected: str | None
    actual: str | None
    origin: str


def verify(name: str, *, record_missing: bool = True) -> VerifyResult:
    """Hash the cached file of `name` and compare with the published or recorded sha256.

    A present file with no hash known (e.g. copied in by hand) gets its hash recorded (status "unrecorded").
    Nothing is deleted: a mismatch is reported so the user decides.
    """
    e = entry(name)
    dest = cache_dir() / e.filename
    expected, origin = expected_sha256(name)
    if not dest.is_file():
        return VerifyResult(name, dest, "missing", expected, None, origin)
    actual = sha256_file(dest)
    if expected is None:
        if record_missing:
            _ensure_writable(dest.parent)
            _record_hash(e.filename, actual, "(verified locally; not downloaded by engine.weights)")
        return VerifyResult(name, dest, "unrecorded", None, actual, "new-record")
    return VerifyResult(name, dest, "ok" if actual == expected else "mismatch", expected, actual, origin)


# ---------------------------------------------------------------------------------------------- CLI


def _hash_status(name: str) -> str:
    e = entry(name)
    if e.sha256:
        return "published"
    rec = recorded_hashes().get(e.filename)
    return f"recorded {rec['sha256'][:12]}" if rec else "not published"


def _fmt_size(mb: float) -> str:
    if mb < 1:
        return f"{mb * 1000:.0f} kB"
    return f"{mb / 1000:.2f} GB" if mb >= 1000 else f"{mb:.0f} MB"


def _cmd_list(out, long: bool = False) -> int:
    rows = [("name", "file", "size", "present", "sha256", "purpose")]
    for name, e in MANIFEST.items():
        dest = cache_dir() / e.filename
        present = f"yes ({_fmt_size(dest.stat().st_size / 1e6)})" if dest.is_file() else "no"
        mark = " *" if name in DEFAULT_NAMES else ""
        rows.append((name + mark, e.filename, "~" + _fmt_size(e.approx_size_mb), present, _hash_status(name), e.purpose))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5], file=out)
    if long:
        for name, e in MANIFEST.items():
            print(f"\n{name}: {e.filename}\n  url:     {e.url}\n  page:    {e.page}\n  source:  {e.source}"
                  f"\n  license: {e.license}\n  size:    ~{_fmt_size(e.approx_size_mb)} ({e.size_note})"
                  f"\n  sha256:  {f'{e.sha256} ({e.sha256_note})' if e.sha256 else e.sha256_note}", file=out)
            for other in e.other_sources:
                print(f"  also:    {other}", file=out)
    print(f"\ncache: {cache_dir()}   (* = downloaded by `download --default`)", file=out)
    print("sha256: the micromotion-* directions carry a pinned sha256 (checked against the repository's git "
          "blobs); no other publisher above publishes one: a file's hash is recorded at its first download "
          f"({HASHES_FILE}) and checked by `verify` ever after.", file=out)
    return 0


def _names(args_names: Sequence[str], default: bool, all_: bool) -> list[str]:
    names = list(args_names)
    if default:
        names += [n for n in DEFAULT_NAMES if n not in names]
    if all_:
        names += [n for n in MANIFEST if n not in names]
    for n in names:
        entry(n)
    return names


def _cmd_download(args, out) -> int:
    names = _names(args.names, args.default, args.all)
    if not names:
        print("error: name which weights to download (NAME..., --default or --all); see `list`", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            res = download(name, base_url=args.base_url, force=args.force, retries=args.retries,
                           progress=not args.no_progress)
        except (WeightsError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        if res.status == "present":
            print(f"{name}: already present at {res.path} (check it with `verify {name}`)", file=out)
        elif res.hash_origin == "new-record":
            print(f"{name}: downloaded to {res.path}; no sha256 is published for it, so its sha256 "
                  f"{res.sha256} was recorded in {_hashes_path()} and `verify` checks it from now on", file=out)
        else:
            print(f"{name}: downloaded to {res.path}; sha256 matches the {res.hash_origin} hash", file=out)
    if args.default and not failed:
        print("networks ready. The live effect also needs directions: `python -m directions setup` fetches "
              "them (and skips these networks)", file=out)
    return 1 if failed else 0


def _cmd_verify(args, out) -> int:
    names = list(args.names) or [n for n, e in MANIFEST.items() if (cache_dir() / e.filename).is_file()]
    bad = 0
    for name in names:
        try:
            res = verify(name)
        except (WeightsError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            bad += 1
            continue
        if res.status == "ok":
            print(f"{name}: ok ({res.origin} sha256 {res.actual[:16]}...)", file=out)
        elif res.status == "unrecorded":
            print(f"{name}: no hash was known; recorded sha256 {res.actual} now", file=out)
        elif res.status == "missing":
            print(f"{name}: missing; run: python -m engine.weights download {name}", file=out)
            bad += 1
        else:
            print(f"{name}: MISMATCH: {res.path} has sha256 {res.actual}, {res.origin} sha256 is {res.expected}; "
                  f"the file changed since it was downloaded: delete it and run: "
                  f"python -m engine.weights download {name}", file=out)
            bad += 1
    if not names:
        print("nothing downloaded yet; see `python -m engine.weights list`", file=out)
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine.weights",
        description=f"List, download and verify the pretrained weights (cache: ${ENV_HOME}/weights, "
                    f"default ~/.cache/micromotion/weights).",
        epilog="The live effect needs the default networks AND the paper's directions: "
               "`python -m directions setup` fetches both in one go (what is installed is skipped).",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    ls = sub.add_parser("list", help="show every known file, whether it is present, and its hash status")
    ls.add_argument("--long", action="store_true", help="also show URL, source README, licence and size notes")
    d = sub.add_parser("download", help="download files (resumable; sha256 checked or recorded)")
    d.add_argument("names", nargs="*", metavar="NAME", help="manifest names to download (see `list`)")
    d.add_argument("--default", action="store_true", help=f"the generator and default encoders: {', '.join(DEFAULT_NAMES)}")
    d.add_argument("--all", action="store_true", help="every file in the manifest")
    d.add_argument("--base-url", default=None, help=f"fetch BASE/<filename> instead of the official URL (also ${ENV_BASE_URL})")
    d.add_argument("--force", action="store_true", help="download again even if the file is present")
    d.add_argument("--retries", type=int, default=3, help="attempts after a dropped connection (default 3)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = sub.add_parser("verify", help="check files against their published or recorded sha256")
    v.add_argument("names", nargs="*", metavar="NAME", help="default: every downloaded file")
    return p


def main(argv: Sequence[str] | None = None, out=None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 failure, 2 usage)."""
    out = out or sys.stdout
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "list":
            return _cmd_list(out, long=args.long)
        if args.cmd == "download":
            return _cmd_download(args, out)
        return _cmd_verify(args, out)
    except (WeightsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
