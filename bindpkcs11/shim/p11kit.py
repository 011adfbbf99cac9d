"""Where p11-kit's pkcs11.h lives, for both compilations of the shim (cffi extension, libbp11.so).

Standard library only: build_shim.py loads this file by path while the package is being built,
before bindpkcs11 can be imported.
"""

from __future__ import annotations

import shutil
import subprocess

# Debian's libp11-kit-dev puts the header here; used when pkg-config is absent or does not know
# p11-kit-1 (a minimal build container), so a build on Debian still finds it.
FALLBACK_INCLUDE = "/usr/include/p11-kit-1"


def include_dirs() -> list[str]:
    """The -I directories pkg-config gives for p11-kit-1, or the Debian path when it gives none."""
    pkg_config = shutil.which("pkg-config")
    if pkg_config:
        try:
            result = subprocess.run([pkg_config, "--cflags-only-I", "p11-kit-1"], capture_output=True,
                                    text=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            result = None
        if result is not None and result.returncode == 0:
            found = [flag[2:] for flag in result.stdout.split() if flag.startswith("-I")]
            if found:
                return found
    return [FALLBACK_INCLUDE]
