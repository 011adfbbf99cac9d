"""bindpkcs11: DNSSEC keys in PKCS#11 tokens, served by BIND."""

__version__ = "0.1.0"
