"""Load a folder of Python source files as a training corpus, split by file.

The default corpus is the standard library of the running interpreter (the paper trains on Python
code; the stdlib is a small, always-available stand-in that fits a 2-core CPU budget).

Rules, all deterministic:

- Every ``*.py`` file under the root is collected recursively, in order of its relative POSIX path.
  Directories named ``site-packages`` or ``dist-packages`` are skipped (under pyenv they live inside
  the stdlib folder, and they are third-party code). Symlinked directories are followed, but each real
  directory is visited at most once, so symlink loops cannot recurse forever. Broken symlinks are skipped.
- Texts are the exact file contents: the bytes are decoded as strict UTF-8 with no newline
  translation (``\\r\\n`` stays ``\\r\\n``; a BOM stays a ``\\ufeff`` character). Files that are not valid
  UTF-8 are skipped and counted in ``skipped_non_utf8``. Empty files are kept (they are real files and
  contribute zero bytes).
- A file goes to validation iff ``int(sha256(relpath).hexdigest()[:8], 16) / 2**32 < val_fraction``
  (``relpath`` UTF-8 encoded). With two or more files both splits are guaranteed non-empty: if the hash
  puts every file in one split, the lexicographically first file is moved to the other.

Manifest (JSON-serialisable dict):

- ``root``: the root folder as a string; ``val_fraction``: the fraction used.
- ``files``, ``train_files``, ``val_files``: numbers of included files.
- ``bytes``, ``train_bytes``, ``val_bytes``: UTF-8 byte counts of the included texts.
- ``sha256``: hex digest of the concatenation of every included file's raw bytes (both splits), in
  sorted relative-path order, with no separator and nothing else between or after them.
- ``skipped_non_utf8``: number of ``.py`` files skipped because they are not valid UTF-8.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from sparse_model.errors import UserError

EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages"})


def default_corpus_dir() -> Path:
    """The standard library folder of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


@dataclass
class Corpus:
    """A corpus split by file into train and validation lists of ``(relative posix path, text)``."""

    root: Path
    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    skipped_non_utf8: int
    manifest: dict = field(default_factory=dict)


def _is_val(relpath: str, val_fraction: float) -> bool:
    h = int(hashlib.sha256(relpath.encode("utf-8")).hexdigest()[:8], 16)
    return h / 2**32 < val_fraction


def _find_py_files(root: Path) -> list[tuple[str, Path]]:
    """All ``*.py`` files under ``root`` as ``(relative posix path, path)``, sorted by relative path."""
    found: dict[str, Path] = {}
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        for name in filenames:
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            if not path.is_file():  # broken symlink, socket, ...
                continue
            rel = path.relative_to(root).as_posix()
            found.setdefault(rel, path)
    return sorted(found.items())


def load_corpus(root: Path | str | None = None, val_fraction: float = 0.05) -> Corpus:
    """Read every ``.py`` file under ``root`` (default: the stdlib) and split it by file.

    Raises ``UserError`` if the folder is missing, is not a directory, holds no ``.py`` files, or
    holds only files that are undecodable or empty.
    """
    root = default_corpus_dir() if root is None else Path(root)
    if not 0.0 <= val_fraction <= 1.0:
        raise UserError(
            f"validation fraction {val_fraction} is out of range; pass a value between 0 and 1, e.g. 0.05"
        )
    if not root.exists():
        raise UserError(
            f"corpus folder {root} does not exist; pass --corpus DIR with a folder of .py files"
        )
    if not root.is_dir():
        raise UserError(
            f"corpus path {root} is not a directory; pass --corpus DIR with a folder of .py files"
        )

    files = _find_py_files(root)
    if not files:
        raise UserError(
            f"corpus folder {root} contains no .py files; pass --corpus DIR with a folder of .py files"
        )

    texts: list[tuple[str, str]] = []
    skipped = 0
    digest = hashlib.sha256()
    total_bytes = 0
    for rel, path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read corpus file {path}: {exc.strerror}; check its permissions") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        digest.update(data)
        total_bytes += len(data)
        texts.append((rel, text))

    if total_bytes == 0:
        raise UserError(
            f"corpus folder {root} has no usable text: all {len(files)} .py files are empty or not "
            "valid UTF-8; pass --corpus DIR with a folder of UTF-8 .py files"
        )

    train = [(rel, t) for rel, t in texts if not _is_val(rel, val_fraction)]
    val = [(rel, t) for rel, t in texts if _is_val(rel, val_fraction)]
    if len(texts) >= 2:
        if not val:
            val.append(train.pop(0))
        elif not train:
            train.append(val.pop(0))

    def nbytes(items: list[tuple[str, str]]) -> int:
        return sum(len(t.encode("utf-8")) for _, t in items)

    train_bytes = nbytes(train)
    val_bytes = nbytes(val)
    manifest = {
        "root": str(root),
        "files": len(texts),
        "bytes": total_bytes,
        "sha256": digest.hexdigest(),
        "train_files": len(train),
        "val_files": len(val),
        "train_bytes": train_bytes,
        "val_bytes": val_bytes,
        "skipped_non_utf8": skipped,
        "val_fraction": val_fraction,
    }
    return Corpus(root=root, train=train, val=val, skipped_non_utf8=skipped, manifest=manifest)
