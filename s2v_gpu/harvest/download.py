"""Downloading the planned products: resumable, verified, atomic, bounded, retried.

- A product is fetched into ``.NAME.zip.part`` (a name no reader takes for a product) and renamed to
  ``NAME.zip`` only once verified: its size, the catalogue's MD5 when it gives one, and every
  member's CRC in the zip's directory. A partial file never looks complete.
- A cut download resumes from the partial file with an HTTP ``Range`` request (a server that ignores
  it sends the whole file again, which replaces the partial one).
- Timeouts, cut connections and 5xx answers are retried with an exponential backoff, a 429 after its
  ``Retry-After`` (up to ``max_retry_after_s``); at most ``retries`` times. A product that still
  fails is reported and the others go on.
- A product already present (a verified zip, or its folder) is not fetched again; verified zips are
  recorded in ``.s2v_harvest.json`` (name, size, modification time) so they are not read again.
- Products on tape (``online: false``) are not waited for: they are reported.
- The API key travels in one request header; it is never printed, logged or written.
"""

from __future__ import annotations

import email.utils
import errno
import hashlib
import json
import logging
import os
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .catalog import CatalogProduct
from .config import DownloadConfig

__all__ = ["LEDGER", "Outcome", "fetch_all", "verify_zip"]

log = logging.getLogger(__name__)

LEDGER = ".s2v_harvest.json"
#: redirects followed from a product's address (each by hand: the API key stays with its host)
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Outcome:
    """What became of one planned product: ``present``, ``fetched``, ``on tape`` or ``failed``."""

    name: str
    status: str
    fetched_bytes: int = 0
    reason: str = ""


class _Retry(Exception):
    """A failure worth another try (the message says which): ``wait`` seconds before it (None: the
    backoff), ``final``: no further try mends it."""

    wait: float | None = None
    final: bool = False


def fetch_all(products: list[CatalogProduct], dest: Path, cfg: DownloadConfig, headers: dict[str, str],
              present: set[str]) -> list[Outcome]:
    """Every product into ``dest``, ``cfg.parallel`` at once; ``present``: names already there as folders."""
    import requests

    ledger = _read_ledger(dest)
    session = requests.Session()
    session.headers.update(headers)
    adapter = requests.adapters.HTTPAdapter(pool_connections=cfg.parallel, pool_maxsize=cfg.parallel)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    secret = tuple(headers)  # sent to the catalogue's host only, never after a redirect to another

    def one(product: CatalogProduct) -> Outcome:
        try:
            return _fetch_one(session, product, dest, cfg, ledger, present, secret)
        except OSError as exc:  # the disk: stop this product, say why, keep the partial file for a resume
            reason = _disk_reason(dest, exc)
            log.error("%s: %s", product.zip_name, reason)
            return Outcome(product.name.name, "failed", 0, reason)

    with ThreadPoolExecutor(max_workers=cfg.parallel) as pool:
        outcomes = list(pool.map(one, products))
    _write_ledger(dest, ledger)
    return outcomes


def _fetch_one(session, product: CatalogProduct, dest: Path, cfg: DownloadConfig, ledger: dict,
               present: set[str], secret: tuple[str, ...] = ()) -> Outcome:
    final = dest / product.zip_name
    if product.name.name in present:
        return Outcome(product.name.name, "present", 0, "its folder (or a zip in a sub-folder) is there")
    if final.exists() and _known_good(final, product, ledger):
        return Outcome(product.name.name, "present", 0, "verified before")
    if final.exists():
        problem = verify_zip(final, product)
        if problem is None:
            ledger[final.name] = _stamp(final)
            return Outcome(product.name.name, "present", 0, "verified")
        return Outcome(product.name.name, "failed", 0, f"{final} is there but {problem}: move it away to fetch it "
                                                         "again (a file in the way is never replaced)")
    if not product.online:
        return Outcome(product.name.name, "on tape", 0, "the catalogue says it is on tape (online: false): order it "
                                                        "on the portal, then harvest again")
    part = dest / f".{product.zip_name}.part"
    try:
        fetched = _download(session, product, part, cfg, secret)
    except _Retry as exc:
        return Outcome(product.name.name, "failed", 0, str(exc))
    problem = verify_zip(part, product)
    if problem is not None:
        part.unlink(missing_ok=True)
        log.error("%s: %s; the partial file is removed", product.zip_name, problem)
        return Outcome(product.name.name, "failed", fetched, f"{problem} (removed; harvest again to fetch it anew)")
    os.replace(part, final)
    ledger[final.name] = _stamp(final)
    log.info("%s: fetched and verified (%d bytes)", final, final.stat().st_size)
    return Outcome(product.name.name, "fetched", fetched)


def _download(session, product: CatalogProduct, part: Path, cfg: DownloadConfig,
              secret: tuple[str, ...] = ()) -> int:
    """Fetch ``product`` into ``part`` (resuming what is there); the bytes fetched.

    Raises:
        _Retry: given up after ``cfg.retries`` tries, or a refusal that no retry mends.
    """
    fetched, attempt = 0, 0
    while True:
        try:
            fetched += _one_request(session, product, part, cfg, secret)
            return fetched
        except _Retry as exc:
            attempt += 1
            wait = getattr(exc, "wait", None)
            if attempt > cfg.retries or getattr(exc, "final", False):
                raise _Retry(f"{product.zip_name}: {exc} (after {attempt} tries)") from None
            wait = cfg.backoff_s * 2 ** (attempt - 1) if wait is None else wait
            log.warning("%s: %s; try %d of %d in %.1f s", product.zip_name, exc, attempt + 1, cfg.retries + 1, wait)
            time.sleep(wait)


def _one_request(session, product: CatalogProduct, part: Path, cfg: DownloadConfig,
                 secret: tuple[str, ...] = ()) -> int:
    """One GET from where ``part`` ends; returns the bytes received. Raises :class:`_Retry` on anything
    that stops the file short of complete."""
    import requests
    import urllib3

    offset = part.stat().st_size if part.exists() else 0
    if product.size is not None and offset > product.size:
        part.unlink()
        offset = 0
    if product.size is not None and offset == product.size:
        return 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    received = 0
    try:
        with _get(session, product.href, headers, secret, cfg) as r:
            offset = _check_status(r, offset, cfg, part)
            with open(part, "ab" if offset else "wb") as fh, _progress(product, offset) as bar:
                # read1: every byte that arrived is written before a cut is noticed, so a resume
                # fetches only what is missing (iter_content drops its last, partial block)
                while chunk := r.raw.read1(cfg.chunk_bytes):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise _Retry(f"connection cut or timed out ({type(exc).__name__}) after {received} bytes") from None
    if product.size is not None and part.stat().st_size < product.size:
        raise _Retry(f"the answer ended at {part.stat().st_size} of {product.size} bytes")
    return received


def _get(session, url: str, headers: dict, secret: tuple[str, ...], cfg: DownloadConfig):
    """GET ``url``, following at most :data:`MAX_REDIRECTS` redirects by hand: the ``secret`` headers
    (the API key) go only to the host of ``url`` (requests would forward them to any host a redirect
    names, an object store's or anyone's)."""
    from urllib.parse import urljoin, urlsplit

    host = urlsplit(url).netloc
    for _ in range(MAX_REDIRECTS + 1):
        own = urlsplit(url).netloc == host
        r = session.get(url, headers={**headers, **({} if own else dict.fromkeys(secret))}, stream=True,
                        timeout=(cfg.timeout_s, cfg.timeout_s), allow_redirects=False)
        if not r.is_redirect:
            return r
        url = urljoin(url, r.headers["Location"])
        r.close()
    exc = _Retry(f"more than {MAX_REDIRECTS} redirects")
    exc.final = True
    raise exc


def _check_status(r, offset: int, cfg: DownloadConfig, part: Path) -> int:
    """The offset to write at, from the answer's status; raises :class:`_Retry` for the others."""
    code = r.status_code
    if code == 206:
        start = r.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
        if start != str(offset):
            raise _Retry(f"the server resumed at {start!r}, not at byte {offset}")
        return offset
    if code == 200:
        return 0  # the whole file (a server that ignores Range): the partial file is replaced
    if code == 416 and part.exists():
        part.unlink()  # the partial file does not fit the product any more: start again
        raise _Retry("the partial file does not fit the product (HTTP 416)")
    if code == 429:
        wait = _retry_after(r.headers.get("Retry-After"))
        exc = _Retry(f"too many requests (HTTP 429, Retry-After {wait if wait is not None else '?'} s)")
        exc.wait = min(wait if wait is not None else cfg.backoff_s, cfg.max_retry_after_s)
        exc.final = wait is not None and wait > cfg.max_retry_after_s
        raise exc
    if code >= 500:
        raise _Retry(f"the server failed (HTTP {code})")
    exc = _Retry(f"refused (HTTP {code}{': check the API key' if code in (401, 403) else ''})")
    exc.final = True
    raise exc


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def verify_zip(path: Path, product: CatalogProduct) -> str | None:
    """What is wrong with a downloaded product, or None: its size, its MD5 (when the catalogue gives
    one), its zip directory and every member's CRC."""
    size = path.stat().st_size
    if product.size is not None and size != product.size:
        return f"its size is {size} bytes, the catalogue says {product.size}"
    if product.md5:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != product.md5:
            return f"its MD5 is {digest.hexdigest()}, the catalogue says {product.md5} (checksum mismatch)"
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"it is not a readable zip ({exc})"
    return None if bad is None else f"its member {bad!r} fails its CRC"


def _progress(product: CatalogProduct, offset: int):
    return tqdm(total=product.size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=product.name.name[:40], leave=False, disable=not sys.stderr.isatty())


def _disk_reason(dest: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        import shutil

        return (f"No space left on device in {dest} ({shutil.disk_usage(dest).free} bytes free); free space and "
                "harvest again: the partial file resumes")
    return f"cannot write into {dest} ({exc.strerror or exc})"


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _known_good(path: Path, product: CatalogProduct, ledger: dict) -> bool:
    stamp = ledger.get(path.name)
    return stamp == _stamp(path) and (product.size is None or product.size == stamp["size"])


def _read_ledger(dest: Path) -> dict:
    try:
        data = json.loads((dest / LEDGER).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_ledger(dest: Path, ledger: dict) -> None:
    from ..writer import atomic_write

    text = json.dumps(ledger, indent=1, sort_keys=True)
    try:
        atomic_write(dest / LEDGER, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as exc:  # a full disk: the zips are verified again next time, nothing is lost
        log.error("%s", exc)
