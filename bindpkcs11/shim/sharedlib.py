"""Build libbp11.so, the plain shared-library form of the shim that a patched BIND links.

The cffi extension (``bindpkcs11._shim``) needs the Python runtime, so C programs cannot load
it; compiling bp11.c a second time as an ordinary ``.so`` takes about 0.1 s.
"""

import os
import shutil
from pathlib import Path

from bindpkcs11.run import run_tool

SHIM_DIR = Path(__file__).resolve().parent
SOURCE = SHIM_DIR / "bp11.c"
HEADER = SHIM_DIR / "bp11.h"
P11_KIT_INCLUDE = "/usr/include/p11-kit-1"


def build_shared_library(out_dir: Path) -> Path:
    """Compile bp11.c into ``out_dir/libbp11.so`` and put bp11.h beside it; return the .so path.

    The header travels with the library because BIND's patch includes it from there.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "libbp11.so"
    cmd = [
        os.environ.get("CC", "gcc"), "-O2", "-fPIC", "-shared",
        f"-I{SHIM_DIR}", f"-I{P11_KIT_INCLUDE}",
        str(SOURCE), "-o", str(target), "-ldl", "-lpthread",
    ]
    run_tool(cmd, what="compiling libbp11.so")
    shutil.copy2(HEADER, out_dir / HEADER.name)
    return target
