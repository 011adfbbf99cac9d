"""Packaging for bindpkcs11: the Python package, its package data, the cffi-built shim, the entry point.

pyproject.toml names the build requirements (setuptools, cffi); the templates, BIND patches and the
shim's C source ship inside the package and are found through bindpkcs11/resources.py.
"""

from setuptools import find_packages, setup

setup(
    name="bindpkcs11",
    version="0.1.0",
    description="Hardware-backed DNSSEC keys (PKCS#11 tokens) for BIND",
    python_requires=">=3.11",
    packages=find_packages(include=["bindpkcs11", "bindpkcs11.*"]),
    package_data={
        "bindpkcs11": ["templates/*.j2", "templates/systemd/*.j2", "patches/*.patch"],
        "bindpkcs11.shim": ["*.c", "*.h"],
    },
    install_requires=[
        "python-pkcs11>=0.10,<0.11",
        "dnspython>=2.6",
        "cryptography>=42",
        "jinja2>=3.1",
        "pexpect>=4.8",
        "cffi>=1.16",
        "pycryptodome>=3.20",
    ],
    cffi_modules=["bindpkcs11/shim/build_shim.py:ffibuilder"],
    extras_require={"test": ["pytest>=8", "hypothesis>=6.100", "jcecard>=0.1.0", "build>=1.0"]},
    entry_points={"console_scripts": ["bindpkcs11=bindpkcs11.cli:main"]},
)
