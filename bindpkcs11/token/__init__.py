"""PKCS#11 access. The only package that imports python-pkcs11; it knows nothing about DNS."""
