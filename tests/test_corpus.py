"""Tests for sparse_model.corpus: file collection, split, manifest, errors."""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from pathlib import Path

import pytest

from sparse_model.corpus import Corpus, default_corpus_dir, load_corpus
from sparse_model.errors import UserError


def _write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small corpus: nested packages, CRLF, unicode, an empty file, noise that must be ignored."""
    root = tmp_path / "corpus"
    for i in range(30):
        _write(root, f"pkg{i % 3}/mod_{i:02d}.py", f"def f{i}():\n    return {i}\n".encode())
    _write(root, "top.py", b"import os\r\nprint('hi')\r\n")
    _write(root, "uni.py", "s = 'h\u00e9llo \U0001f600'\t \n".encode("utf-8"))
    _write(root, "empty.py", b"")
    _write(root, "bad.py", b"x = '\xff\xfe'\n")  # not UTF-8
    _write(root, "notes.txt", b"not python\n")
    _write(root, "lib/site-packages/third.py", b"third = 1\n")
    _write(root, "lib/dist-packages/deb.py", b"deb = 1\n")
    _write(root, "lib/real.py", b"real = 1\n")
    return root


def _expected_files(root: Path) -> dict[str, bytes]:
    """Independent recomputation: UTF-8 .py files outside site/dist-packages."""
    out = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if "site-packages" in rel.split("/") or "dist-packages" in rel.split("/"):
            continue
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out[rel] = data
    return out


def test_default_corpus_dir_is_stdlib() -> None:
    assert default_corpus_dir() == Path(sysconfig.get_paths()["stdlib"])
    assert (default_corpus_dir() / "os.py").is_file()


def test_manifest_counts_bytes_and_sha256(tree: Path) -> None:
    corpus = load_corpus(tree, val_fraction=0.2)
    assert isinstance(corpus, Corpus)
    expected = _expected_files(tree)
    m = corpus.manifest
    json.dumps(m)  # JSON-serialisable
    assert m["root"] == str(tree)
    assert m["files"] == len(expected) == len(corpus.train) + len(corpus.val)
    assert m["bytes"] == sum(len(b) for b in expected.values())
    concat = b"".join(expected[rel] for rel in sorted(expected))
    assert m["sha256"] == hashlib.sha256(concat).hexdigest()
    assert m["train_files"] == len(corpus.train) and m["val_files"] == len(corpus.val)
    assert m["train_bytes"] == sum(len(expected[r]) for r, _ in corpus.train)
    assert m["val_bytes"] == sum(len(expected[r]) for r, _ in corpus.val)
    assert m["train_bytes"] + m["val_bytes"] == m["bytes"]
    assert m["skipped_non_utf8"] == corpus.skipped_non_utf8 == 1
    assert m["val_fraction"] == 0.2


def test_texts_are_exact_file_contents(tree: Path) -> None:
    corpus = load_corpus(tree)
    texts = dict(corpus.train + corpus.val)
    assert texts["top.py"] == "import os\r\nprint('hi')\r\n"  # no newline translation
    assert texts["uni.py"] == "s = 'h\u00e9llo \U0001f600'\t \n"
    assert texts["empty.py"] == ""
    assert "bad.py" not in texts
    assert "notes.txt" not in texts


def test_split_is_deterministic_by_file_and_follows_hash(tree: Path) -> None:
    a = load_corpus(tree, val_fraction=0.2)
    b = load_corpus(str(tree), val_fraction=0.2)
    assert a.train == b.train and a.val == b.val and a.manifest == b.manifest
    train_paths = [r for r, _ in a.train]
    val_paths = [r for r, _ in a.val]
    assert train_paths == sorted(train_paths) and val_paths == sorted(val_paths)
    assert not set(train_paths) & set(val_paths)
    assert a.train and a.val
    for rel in train_paths + val_paths:
        h = int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) / 2**32
        assert (rel in val_paths) == (h < 0.2)


def test_both_splits_non_empty_when_hash_puts_all_in_one(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path, f"m{i}.py", b"x = 1\n")
    none_val = load_corpus(tmp_path, val_fraction=0.0)
    assert [r for r, _ in none_val.val] == ["m0.py"]
    assert [r for r, _ in none_val.train] == ["m1.py", "m2.py"]
    all_val = load_corpus(tmp_path, val_fraction=1.0)
    assert [r for r, _ in all_val.train] == ["m0.py"]
    assert len(all_val.val) == 2


def test_site_and_dist_packages_excluded(tree: Path) -> None:
    corpus = load_corpus(tree)
    paths = [r for r, _ in corpus.train + corpus.val]
    assert "lib/real.py" in paths
    assert not any("site-packages" in p or "dist-packages" in p for p in paths)


def test_symlink_loop_is_safe(tree: Path) -> None:
    expected = load_corpus(tree).manifest
    try:
        os.symlink(tree, tree / "pkg0" / "loop", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("cannot create symlinks here")
    assert load_corpus(tree).manifest == expected  # the loop adds nothing and terminates


def test_symlinked_directory_is_followed(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside, "extra.py", b"extra = 1\n")
    try:
        os.symlink(outside, tree / "linked", target_is_directory=True)
    except (OSError, NotImplementedError):
        pytest.skip("cannot create symlinks here")
    corpus = load_corpus(tree)
    assert "linked/extra.py" in dict(corpus.train + corpus.val)


def test_default_corpus_excludes_site_packages() -> None:
    corpus = load_corpus()
    paths = [r for r, _ in corpus.train + corpus.val]
    assert len(paths) > 500
    assert "os.py" in paths
    assert not any(p.startswith("site-packages/") or "/site-packages/" in p for p in paths)


def test_missing_folder_raises(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="does not exist") as info:
        load_corpus(missing)
    assert str(missing) in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no .py files") as info:
        load_corpus(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_folder_without_py_files_raises(tmp_path: Path) -> None:
    _write(tmp_path, "readme.txt", b"hello\n")
    _write(tmp_path, "site-packages/hidden.py", b"x = 1\n")
    with pytest.raises(UserError, match="no .py files") as info:
        load_corpus(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_file_instead_of_folder_raises(tmp_path: Path) -> None:
    f = tmp_path / "a.py"
    f.write_text("x = 1\n")
    with pytest.raises(UserError, match="not a directory") as info:
        load_corpus(f)
    assert str(f) in str(info.value)


def test_all_undecodable_or_empty_raises(tmp_path: Path) -> None:
    _write(tmp_path, "bad.py", b"\xff\xfe\xfd")
    _write(tmp_path, "empty.py", b"")
    with pytest.raises(UserError, match="empty or not valid UTF-8") as info:
        load_corpus(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_bad_val_fraction_raises(tmp_path: Path) -> None:
    _write(tmp_path, "a.py", b"x = 1\n")
    with pytest.raises(UserError, match="validation fraction"):
        load_corpus(tmp_path, val_fraction=1.5)
