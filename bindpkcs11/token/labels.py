"""Token labels an operator may choose: what PKCS#11 can store and what bindpkcs11 can name safely.

CKA_LABEL of a token is 32 bytes of UTF-8 padded with spaces, so a label longer than that is cut
and one with trailing spaces is the same token as without them. Labels also end up in PIN file
names, key URIs and comments in named.conf: control characters are refused everywhere.
"""

from __future__ import annotations

from bindpkcs11.errors import UsageError
from bindpkcs11.output import printable

MAX_TOKEN_LABEL_BYTES = 32


class InvalidTokenLabel(UsageError):
    """Invalid token label."""


def check_token_label(label: str) -> str:
    """`label` if a token can carry it unchanged; InvalidTokenLabel with the reason otherwise."""
    if not label:
        raise InvalidTokenLabel("empty token label: give --label/--token a name such as dnssec")
    if any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in label):
        raise InvalidTokenLabel(f"token label '{printable(label)}' contains control characters")
    if label != label.strip(" "):
        raise InvalidTokenLabel(f"token label '{label}' starts or ends with a space (PKCS#11 pads "
                                "labels with spaces, so the token could not keep it)")
    if len(label.encode("utf-8")) > MAX_TOKEN_LABEL_BYTES:
        raise InvalidTokenLabel(f"token label '{label}' is longer than {MAX_TOKEN_LABEL_BYTES} "
                                "bytes (the PKCS#11 limit)")
    return label
