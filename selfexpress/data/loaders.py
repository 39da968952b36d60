"""Readers for the file formats datasets come in, and a checked downloader.

Every reader raises ``ValueError`` naming the file for anything it cannot parse (truncated,
corrupt, wrong format), so a bad download fails early with a message a user can act on.
Nothing here unpickles data: ``.npy`` files are read with ``allow_pickle=False``.

- :func:`load_idx` -- the idx format of MNIST / Fashion-MNIST / EMNIST (gzipped or not).
- :func:`load_mat` -- MATLAB ``.mat`` files (v4 - v7.2, through :func:`scipy.io.loadmat`).
- :func:`load_array` -- ``.npy``, ``.csv``, ``.txt`` / ``.tsv`` / ``.dat`` numeric tables.
- :func:`load_labels` -- a 1-D integer label vector from any of the formats above.
- :func:`download_file` -- fetch a URL to a file atomically, with an optional sha256 / md5 check.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..io import atomic_file

__all__ = ["load_idx", "load_mat", "load_array", "load_labels", "download_file", "file_hash"]

# idx type codes (third byte of the magic number) -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzip(path: Path) -> bytes:
    """The (decompressed) bytes of ``path``; gzip is detected from the content, not the suffix."""
    if not path.is_file():
        raise ValueError(f"file {path} does not exist")
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head != _GZIP_MAGIC:
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read()
    except (EOFError, OSError, zlib.error) as exc:  # truncated stream, bad CRC, not gzip after all
        raise ValueError(f"{path} is a corrupt or truncated gzip file: {exc}") from None


def load_idx(path) -> np.ndarray:
    """Read an idx file (``*-idx1-ubyte`` labels, ``*-idx3-ubyte`` images), gzipped or not.

    The header is checked: the magic number (``2049`` for an idx1 uint8 vector, ``2051`` for an
    idx3 uint8 image stack; the other idx type codes are accepted too) and the declared sizes
    must match the payload exactly, so a truncated or corrupt file raises ``ValueError`` naming
    the file.  Returns a writable array in native byte order: ``(n,)`` for idx1,
    ``(n, rows, cols)`` for idx3 (``uint8`` for the MNIST family).
    """
    path = Path(path)
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise ValueError(f"{path} is too short ({len(raw)} bytes) to be an idx file")
    magic = int.from_bytes(raw[:4], "big")
    zero, type_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or type_code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise ValueError(
            f"{path} is not an idx file: magic number {magic} (0x{magic:08x}); expected 2049 (idx1 labels) "
            "or 2051 (idx3 images)"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path} is truncated: the idx header declares {ndim} dimensions but the file ends early")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header_len
    if got != expected:
        what = "truncated" if got < expected else "corrupt (trailing bytes)"
        raise ValueError(
            f"{path} is {what}: header declares shape {shape} ({expected} payload bytes) but the file holds "
            f"{got} payload bytes"
        )
    arr = np.frombuffer(bytearray(raw[header_len:]), dtype=dtype).reshape(shape)  # bytearray -> writable
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    elif dtype.kind == "u":
        arr = arr.view(np.uint8)
    else:
        arr = arr.view(np.int8)
    return arr


def _is_numeric_2d(v) -> bool:
    return (
        isinstance(v, np.ndarray)
        and v.ndim == 2
        and v.dtype != object
        and (np.issubdtype(v.dtype, np.number) or v.dtype == bool)
        and not np.iscomplexobj(v)
    )


def load_mat(path, key=None, labels_key=None):
    """Read a numeric array (and optionally labels) from a MATLAB ``.mat`` file.

    ``key=None`` picks the single 2-D numeric array with both dimensions larger than 1; when there
    is none or several, ``ValueError`` lists the variables (with shapes) so you can pass ``key=``.
    With ``labels_key`` returns ``(X, labels)`` with labels flattened to 1-D ``int64``;
    otherwise returns ``X``.  The array is returned as stored (MATLAB files often hold points as
    *columns*: transpose if needed).  MATLAB v7.3 files are HDF5 and need ``h5py``.
    """
    path = Path(path)
    mat = _read_mat(path)
    variables = {k: v for k, v in mat.items() if not k.startswith("__")}
    listing = ", ".join(f"{k} {getattr(v, 'shape', '?')} {getattr(v, 'dtype', type(v).__name__)}"
                        for k, v in variables.items()) or "(none)"
    if key is None:
        cands = [k for k, v in variables.items() if _is_numeric_2d(v) and min(v.shape) > 1 and k != labels_key]
        if len(cands) != 1:
            why = "no 2-D numeric array" if not cands else f"{len(cands)} 2-D numeric arrays"
            raise ValueError(f"{path} holds {why}; pass key= one of its variables: {listing}")
        key = cands[0]
    if key not in variables:
        raise ValueError(f"{path} has no variable {key!r}; its variables are: {listing}")
    X = variables[key]
    if not _is_numeric_2d(X):
        raise ValueError(f"variable {key!r} in {path} is not a 2-D numeric array "
                         f"(shape {getattr(X, 'shape', '?')}, dtype {getattr(X, 'dtype', '?')})")
    if labels_key is None:
        return X
    if labels_key not in variables:
        raise ValueError(f"{path} has no variable {labels_key!r}; its variables are: {listing}")
    return X, _as_labels(variables[labels_key], f"variable {labels_key!r} in {path}")


def _split_fields(line: str, delimiter):
    return [f for f in line.split(delimiter)] if delimiter is not None else line.split()


def _find_ragged_line(path: Path, delimiter, skiprows: int, comments: str = "#"):
    """First line whose number of fields differs from the first data line: (lineno, n, expected)."""
    expected = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if lineno <= skiprows:
                continue
            line = line.split(comments, 1)[0].strip()
            if not line:
                continue
            n = len(_split_fields(line, delimiter))
            if expected is None:
                expected = n
            elif n != expected:
                return lineno, n, expected
    return None


def load_array(path, *, mmap_mode=None, delimiter=None, skiprows=0, dtype=np.float64) -> np.ndarray:
    """Read a numeric array from ``.npy`` or a text table (``.csv``, ``.txt``, ``.tsv``, ``.dat``).

    ``.npy`` is loaded with ``allow_pickle=False`` (object arrays are refused) and honours
    ``mmap_mode`` (e.g. ``"r"`` to map a large file without reading it).  Text tables go through
    :func:`numpy.loadtxt` (``delimiter`` defaults to ``","`` for ``.csv``, tab for ``.tsv`` and
    whitespace otherwise; ``skiprows`` skips a header); a ragged table raises ``ValueError``
    naming the file and the first offending line.  Text tables are returned 2-D.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with open(path, "rb") as fh:
            head = fh.read(6)
        if head != b"\x93NUMPY":  # np.load would take any other file for a pickle and say so
            raise ValueError(f"{path} is not a .npy file: {_what_file_is(path, head)}") from None
        try:
            return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
        except ValueError as exc:
            msg = str(exc).lower()
            if "pickle" in msg or "python objects" in msg:  # the memory-mapped path words it differently
                raise ValueError(f"{path} holds Python objects (pickled); refusing to load it. Save a numeric "
                                 "array instead") from None
            raise ValueError(f"{path} is not a valid .npy file: {exc}") from None
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path} is not a valid .npy file: {exc}") from None
    if suffix in (".csv", ".txt", ".tsv", ".dat"):
        if delimiter is None:
            delimiter = {".csv": ",", ".tsv": "\t"}.get(suffix)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*input contained no data")
                arr = np.loadtxt(path, delimiter=delimiter, skiprows=skiprows, dtype=dtype, ndmin=2)
        except ValueError as exc:
            header = _looks_like_header(path, delimiter, skiprows)
            if header is not None:
                raise ValueError(f"{path}: the first line looks like a header ({header!r}), not numbers; skip it "
                                 "with --skip-header (Python: load_array(path, skiprows=1))") from None
            bad = _find_ragged_line(path, delimiter, skiprows)
            if bad is not None:
                lineno, n, expected = bad
                raise ValueError(f"{path}: line {lineno} has {n} fields but the first data row has {expected} "
                                 "(ragged rows)") from None
            raise ValueError(f"could not read {path} as a numeric table: {exc}") from None
        if arr.size == 0:
            raise ValueError(f"{path} holds no data rows (empty file, or only comments and header)")
        return arr
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected .npy, .csv, .txt, .tsv or .dat "
                     "(use load_mat for .mat and load_idx for idx files)")


def _what_file_is(path, head):
    """A short description of a file that is not what its name says (text table, pickle, zip, empty, binary)."""
    if not head:
        return "it is empty"
    if head[:1] == b"\x80":
        return "it is a Python pickle, which is never loaded (it could run code); save a numeric array with np.save"
    if head[:2] == b"PK":
        return "it is a zip archive (an .npz?); extract the array and save it with np.save"
    with open(path, "rb") as fh:
        sample = fh.read(4096)
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        return "it does not start with the NumPy magic bytes (not written by np.save)"
    first = text.splitlines()[0][:60] if text.splitlines() else ""
    return (f"it is a text file (first line {first!r}); rename it .csv or .txt to read it as a table, or save "
            "the array with np.save")


def _looks_like_header(path, delimiter, skiprows):
    """The first data line when it is a header: printable text with a non-numeric field, followed by a numeric
    line (or by nothing). None otherwise -- a binary file or a table broken further down is not a header case."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) <= skiprows:
        return None

    def numeric(line):
        try:
            [float(f.strip().strip('"')) for f in (line.split(delimiter) if delimiter else line.split())]
            return True
        except ValueError:
            return False

    line = lines[skiprows].strip()
    if not line.isprintable() or numeric(line):
        return None
    if len(lines) > skiprows + 1 and not numeric(lines[skiprows + 1].strip()):
        return None
    return line[:80]


def _as_labels(arr, what) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a label vector, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ValueError(f"{what} must hold integer labels, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.equal(np.round(arr), arr).all():
            raise ValueError(f"{what} must hold integer labels, found non-integer values")
    return arr.astype(np.int64)


def load_labels(path, key=None) -> np.ndarray:
    """A 1-D ``int64`` label vector from an idx1 file, ``.npy``, ``.csv`` / ``.txt`` or ``.mat`` (``key``)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".mat"):
        if key is None:
            mat = _read_mat(path)
            vecs = [k for k, v in mat.items() if not k.startswith("__") and isinstance(v, np.ndarray)
                    and 1 <= v.ndim <= 2 and (v.ndim == 1 or 1 in v.shape)]
            if len(vecs) != 1:
                raise ValueError(f"{path} holds {len(vecs)} vectors {vecs}; pass key= to choose the labels")
            key = vecs[0]
        else:
            mat = _read_mat(path)
            if key not in mat:
                names = [k for k in mat if not k.startswith("__")]
                raise ValueError(f"{path} has no variable {key!r}; its variables are: {names}")
        return _as_labels(mat[key], f"variable {key!r} in {path}")
    if "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        return _as_labels(load_idx(path), str(path))
    return _as_labels(load_array(path), str(path))


def _read_mat(path: Path) -> dict:
    import scipy.io

    if not path.is_file():
        raise ValueError(f"file {path} does not exist")
    try:
        return scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise ValueError(f"{path} is a MATLAB v7.3 (HDF5) file; read it with h5py, or re-save it with -v7") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for a corrupt file
        raise ValueError(f"{path} is not a readable .mat file: {type(exc).__name__}: {exc}") from None


def file_hash(path, algorithm="sha256", chunk_size=1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def _checksums_ok(path: Path, sha256, md5):
    """None when fine, else a message describing the mismatch."""
    for algo, want in (("sha256", sha256), ("md5", md5)):
        if want is None:
            continue
        got = file_hash(path, algo)
        if got.lower() != want.lower():
            return f"{algo} is {got}, expected {want}"
    return None


def download_file(url, dest, sha256=None, *, md5=None, overwrite=False, timeout=60, verbose=True) -> Path:
    """Download ``url`` to ``dest`` atomically and check its checksum; returns ``dest``.

    The body is streamed into a temporary file next to ``dest`` (fsynced), the checksum
    (``sha256`` and/or ``md5`` hex digests) is verified, and only then is the file renamed to
    ``dest``: an interrupted or corrupt download never leaves a file at ``dest``.  A checksum
    mismatch raises ``ValueError``.  An existing ``dest`` whose checksum matches (or with no
    checksum given) is kept unless ``overwrite``; one that does not match is downloaded again.
    Any URL scheme :mod:`urllib` knows works (``https://``, ``http://``, ``file://``).
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        if _checksums_ok(dest, sha256, md5) is None:
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                req = urllib.request.Request(url, headers={"User-Agent": "selfexpress-downloader"})
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    total = resp.headers.get("Content-Length")
                    total = int(total) if total and total.isdigit() else None
                    bar = None
                    if verbose:
                        from tqdm.auto import tqdm

                        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}",
                                   file=sys.stderr)
                    try:
                        while True:
                            chunk = resp.read(1 << 20)
                            if not chunk:
                                break
                            out.write(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                    finally:
                        if bar is not None:
                            bar.close()
            except OSError as exc:  # URLError / HTTPError / timeouts are OSErrors
                raise OSError(f"could not download {url}: {exc}") from exc
            out.flush()
            os.fsync(out.fileno())
        bad = _checksums_ok(Path(tmp), sha256, md5)
        if bad is not None:
            raise ValueError(f"checksum mismatch for {url} (to {dest}): {bad}. The download is corrupt or the "
                             "file changed upstream; nothing was written")
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def _copy_atomic(src: Path, dest: Path):
    """Copy a file into place through a temporary file and a rename."""
    with atomic_file(dest) as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, 1 << 20)
