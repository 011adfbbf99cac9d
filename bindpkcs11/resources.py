"""Where bindpkcs11 finds the files it ships: templates, BIND patches, the shim's C source.

They are package data inside ``bindpkcs11`` and are looked up here, and only here, through
importlib.resources, so a checkout, an editable install and a wheel in any venv all find them the
same way. Nothing is located relative to a checkout. The callers hand these paths to programs
(jinja2's loader, patch, gcc), so a real directory is required: a package imported from a zip
file is refused with one clear line instead of failing later inside one of those programs.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Callable

import jinja2

from bindpkcs11.errors import BindPkcs11Error


class PackageDataMissing(BindPkcs11Error):
    """bindpkcs11's package data is missing: reinstall the package (pip install bindpkcs11)."""


def _data_dir(*parts: str) -> Path:
    """A directory of package data as a real path, or PackageDataMissing."""
    found = files("bindpkcs11").joinpath(*parts)
    if not isinstance(found, Path) or not found.is_dir():
        raise PackageDataMissing(
            f"bindpkcs11's {'/'.join(parts)} directory is not on disk ({found}): reinstall the package "
            "from a wheel or a source tree (a zip import cannot work: patch and gcc need files)")
    return found


def templates_dir() -> Path:
    """The jinja2 templates for named.conf, zones, rndc and systemd units."""
    return _data_dir("templates")


def patches_dir() -> Path:
    """The patches applied to BIND's source, named bind-SERIES-*.patch."""
    return _data_dir("patches")


def shim_dir() -> Path:
    """The shim's C source (bp11.c, bp11.h), compiled again into libbp11.so for BIND."""
    return _data_dir("shim")


def template_environment(finalize: Callable[[object], object]) -> jinja2.Environment:
    """The jinja2 environment for one kind of rendered file: the package's templates, undefined
    names an error, and `finalize` guarding every value that reaches the text (each kind of file
    has its own unsafe characters: named.conf, openssl.cnf, systemd units)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False, finalize=finalize)
