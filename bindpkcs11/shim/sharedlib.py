"""Build libbp11.so, the plain shared-library form of the shim that a patched BIND links.

The cffi extension (``bindpkcs11._shim``) needs the Python runtime, so C programs cannot load
it; compiling bp11.c a second time as an ordinary ``.so`` takes about 0.1 s.
"""

import os
import shutil
from pathlib import Path

from bindpkcs11 import resources
from bindpkcs11.run import run_tool
from bindpkcs11.shim.p11kit import include_dirs


def source() -> Path:
    """bp11.c, the one C source of the shim (package data)."""
    return resources.shim_dir() / "bp11.c"


def header() -> Path:
    """bp11.h, which BIND's patch includes from beside libbp11.so."""
    return resources.shim_dir() / "bp11.h"


def build_shared_library(out_dir: Path) -> Path:
    """Compile bp11.c into ``out_dir/libbp11.so`` and put bp11.h beside it; return the .so path.

    The header travels with the library because BIND's patch includes it from there.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "libbp11.so"
    cmd = [
        os.environ.get("CC", "gcc"), "-O2", "-fPIC", "-shared",
        f"-I{resources.shim_dir()}", *(f"-I{d}" for d in include_dirs()),
        str(source()), "-o", str(target), "-ldl", "-lpthread",
    ]
    run_tool(cmd, what="compiling libbp11.so")
    shutil.copy2(header(), out_dir / header().name)
    return target
