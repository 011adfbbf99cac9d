"""RFC 7512 PKCS#11 URIs: the one place that parses and formats them.

BIND's `Label:` field, the shim and the CLI all name keys this way
(`pkcs11:token=dnssec;object=example.test-zsk-12345`). Values are kept decoded; formatting
percent-encodes everything outside RFC 7512's unreserved and path/query safe characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from bindpkcs11.errors import InvalidUri

PATH_ATTRIBUTES = (
    "token", "manufacturer", "serial", "model", "library-manufacturer", "library-description",
    "library-version", "slot-description", "slot-manufacturer", "slot-id", "object", "type", "id",
)
QUERY_ATTRIBUTES = ("pin-source", "pin-value", "module-name", "module-path")
OBJECT_TYPES = ("public", "private", "cert", "secret-key", "data")

# RFC 7512 section 2.3: pk11-path-res / pk11-query-res plus unreserved may appear unencoded.
_PATH_SAFE = ":[]@!$'()*+,="
_QUERY_SAFE = ":[]@!$'()*+,=/?|"


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed PKCS#11 URI. `id` is raw bytes; every other value is text."""

    path: dict[str, str] = field(default_factory=dict)
    id: bytes | None = None
    query: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def token(self) -> str | None:
        return self.path.get("token")

    @property
    def object(self) -> str | None:
        return self.path.get("object")

    @property
    def type(self) -> str | None:
        return self.path.get("type")

    def __str__(self) -> str:
        return format_uri(self)


def parse_uri(text: str) -> Pkcs11Uri:
    """Parse `text` as an RFC 7512 URI. Raises InvalidUri with what is wrong."""
    if not text.lower().startswith("pkcs11:"):
        raise InvalidUri(f"invalid PKCS#11 URI '{_redact(text)}': it must start with 'pkcs11:'")
    body = text[len("pkcs11:"):]
    path_part, _, query_part = body.partition("?")
    path: dict[str, str] = {}
    object_id: bytes | None = None
    for name, raw in _attributes(path_part, ";", text):
        if name in path or (name == "id" and object_id is not None):
            raise InvalidUri(f"invalid PKCS#11 URI '{_redact(text)}': '{name}' appears twice")
        if name == "id":
            object_id = unquote_to_bytes(raw)
            continue
        path[name] = _decode_text(raw, text)
    if "type" in path and path["type"] not in OBJECT_TYPES:
        raise InvalidUri(
            f"invalid PKCS#11 URI '{_redact(text)}': type must be one of {', '.join(OBJECT_TYPES)}"
        )
    query = {name: _decode_text(raw, text) for name, raw in _attributes(query_part, "&", text)}
    return Pkcs11Uri(path=path, id=object_id, query=query)


def format_uri(uri: Pkcs11Uri) -> str:
    """The canonical text form: path attributes in RFC order, then the query."""
    parts = []
    for name in PATH_ATTRIBUTES:
        if name == "id":
            if uri.id is not None:
                parts.append("id=" + "".join(f"%{byte:02X}" for byte in uri.id))
        elif name in uri.path:
            parts.append(f"{name}={quote(uri.path[name], safe=_PATH_SAFE)}")
    for name, value in uri.path.items():
        if name not in PATH_ATTRIBUTES:
            parts.append(f"{name}={quote(value, safe=_PATH_SAFE)}")
    text = "pkcs11:" + ";".join(parts)
    if uri.query:
        text += "?" + "&".join(f"{k}={quote(v, safe=_QUERY_SAFE)}" for k, v in uri.query.items())
    return text


def key_uri(token: str, label: str, object_id: bytes | None = None, kind: str | None = None) -> str:
    """The URI naming one key: what goes into a .private `Label:` (never a PIN)."""
    path = {"token": token, "object": label}
    if kind:
        path["type"] = kind
    return format_uri(Pkcs11Uri(path=path, id=object_id))


def _attributes(part: str, separator: str, original: str):
    if not part:
        return
    for item in part.split(separator):
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise InvalidUri(
                f"invalid PKCS#11 URI '{_redact(original)}': '{item}' is not name=value"
            )
        yield name.lower(), value


def _decode_text(raw: str, original: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidUri(f"invalid PKCS#11 URI '{_redact(original)}': '{raw}' is not UTF-8") from None


def _redact(text: str) -> str:
    """Hide a pin-value so an error message never carries a PIN."""
    head, sep, query = text.partition("?")
    if not sep:
        return text
    kept = ["pin-value=***" if q.lower().startswith("pin-value=") else q for q in query.split("&")]
    return head + "?" + "&".join(kept)
