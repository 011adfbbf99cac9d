"""Token labels an operator may choose: what PKCS#11 can store and what bindpkcs11 can name safely.

CKA_LABEL of a token is 32 bytes of UTF-8 padded with blanks, so a longer label would be cut and
one ending in a blank would come back without it. Labels also end up in PIN file names, key URIs
and comments in named.conf: control, format and line-break characters are refused everywhere.
"""

from __future__ import annotations

import unicodedata

from bindpkcs11.errors import UsageError
from bindpkcs11.output import printable

MAX_TOKEN_LABEL_BYTES = 32  # CK_TOKEN_INFO.label


class InvalidTokenLabel(UsageError):
    """Invalid token label."""


def check_token_label(label: str) -> str:
    """`label` if a token can carry it unchanged; InvalidTokenLabel with the reason otherwise."""
    try:
        size = len(label.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidTokenLabel("the token label is not valid UTF-8: choose another label") from None
    problem = None
    if size == 0:
        problem = "is empty"
    elif any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in label):
        problem = "contains control characters (or format or line-break characters)"
    elif size > MAX_TOKEN_LABEL_BYTES:
        problem = f"is {size} bytes long (PKCS#11 allows {MAX_TOKEN_LABEL_BYTES})"
    elif label != label.rstrip():
        problem = "ends with a blank, which the token would drop"
    if problem:
        raise InvalidTokenLabel(f"token label '{printable(label)}' {problem}: choose another label (--label or --token)")
    return label
