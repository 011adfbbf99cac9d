"""RFC 7512 PKCS#11 URIs: the one place that parses and formats them.

BIND's `Label:` field, the shim and the CLI all name keys this way
(`pkcs11:token=dnssec;object=example.test-zsk-12345`). Values are kept decoded; formatting
percent-encodes everything outside RFC 7512's unreserved and path/query safe characters.

RFC 7512 lets a URI carry a PIN (`pin-value`, `pin-source`) and a module (`module-path`,
`module-name`). The parser accepts them, but a key's Label must not: BIND copies the Label into
key files and logs, so a PIN there ends up on disk and in named.log, and a module named there
would let a key file choose which code runs inside named. `parse_key_label` is the one check of
a Label; the PIN comes only from the PIN file, the module only from the profile's
PKCS11_LIBRARY_PATH. Error messages never repeat anything after the `?`.
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
# Never in a key's Label (in the path or the query part): a PIN or the module to load.
LABEL_FORBIDDEN_ATTRIBUTES = ("pin-value", "pin-source", "module-path", "module-name")
OBJECT_TYPES = ("public", "private", "cert", "secret-key", "data")

# RFC 7512 section 2.3: pk11-path-res / pk11-query-res plus unreserved may appear unencoded.
_PATH_SAFE = ":[]@!$'()*+,="
_QUERY_SAFE = ":[]@!$'()*+,=/?|"


class UnsafeKeyLabel(InvalidUri):
    """A key label URI names a PIN or a PKCS#11 module: remove that attribute from the Label."""


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
        raise InvalidUri(f"invalid PKCS#11 URI '{redacted(text)}': it must start with 'pkcs11:'")
    body = text[len("pkcs11:"):]
    path_part, _, query_part = body.partition("?")
    path: dict[str, str] = {}
    object_id: bytes | None = None
    for name, raw in _attributes(path_part, ";", text, "path"):
        if name in path or (name == "id" and object_id is not None):
            raise InvalidUri(f"invalid PKCS#11 URI '{redacted(text)}': '{name}' appears twice")
        if name == "id":
            object_id = unquote_to_bytes(raw)
            continue
        path[name] = _decode_text(raw, text)
    if "type" in path and path["type"] not in OBJECT_TYPES:
        raise InvalidUri(
            f"invalid PKCS#11 URI '{redacted(text)}': type must be one of {', '.join(OBJECT_TYPES)}"
        )
    query: dict[str, str] = {}
    for name, raw in _attributes(query_part, "&", text, "query"):
        if name in query:
            raise InvalidUri(f"invalid PKCS#11 URI '{redacted(text)}': query attribute '{name}' "
                             "appears twice")
        query[name] = _decode_text(raw, text, name)
    return Pkcs11Uri(path=path, id=object_id, query=query)


def parse_key_label(text: str) -> Pkcs11Uri:
    """Parse a key's Label and say whether it is acceptable: return it, or raise InvalidUri.

    Acceptable means an RFC 7512 URI that names a key (object= or id=) and carries none of
    LABEL_FORBIDDEN_ATTRIBUTES, in the path or the query. UnsafeKeyLabel names the attribute,
    never its value. Every Label read from a key file, and every Label about to be written,
    goes through here.
    """
    if not text.startswith("pkcs11:"):
        raise InvalidUri(f"invalid key label '{redacted(text)}': BIND and the shim take only "
                         "labels starting with 'pkcs11:' in lower case")
    names = [item.partition("=")[0] for part, separator in zip(text[7:].partition("?")[::2], ";&")
             for item in part.split(separator) if item]
    for name in names:
        if unquote_to_bytes(name).decode("utf-8", "replace").lower() in LABEL_FORBIDDEN_ATTRIBUTES:
            raise UnsafeKeyLabel(
                f"the key label carries '{unquote_to_bytes(name).decode('utf-8', 'replace').lower()}': "
                "a key label must not name a PIN or a PKCS#11 module (the PIN comes from the PIN "
                "file, the module from PKCS11_LIBRARY_PATH)")
        if name != name.lower() or "%" in name:
            raise InvalidUri(f"invalid key label '{redacted(text)}': attribute names must be "
                             "lower case and not percent-encoded (the shim reads them as written)")
    uri = parse_uri(text)
    for name in LABEL_FORBIDDEN_ATTRIBUTES:
        if name in uri.query or name in uri.path:
            raise UnsafeKeyLabel(
                f"the key label carries '{name}': a key label must not name a PIN or a PKCS#11 "
                "module (the PIN comes from the PIN file, the module from PKCS11_LIBRARY_PATH)"
            )
    if uri.object is None and uri.id is None:
        raise InvalidUri(f"invalid key label '{redacted(text)}': it names no key (add object= or id=)")
    return uri


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
    text = format_uri(Pkcs11Uri(path=path, id=object_id))
    parse_key_label(text)  # formatting encodes '?', ';' and '=' in values: this never raises
    return text


def _attributes(part: str, separator: str, original: str, where: str):
    if not part:
        return
    for item in part.split(separator):
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise InvalidUri(f"invalid PKCS#11 URI '{redacted(original)}': a {where} attribute is "
                             "not name=value")  # never quoted: it may be a PIN
        yield name.lower(), value


def _decode_text(raw: str, original: str, query_name: str | None = None) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        shown = "a value" if query_name is None else f"the value of '{query_name}'"
        raise InvalidUri(f"invalid PKCS#11 URI '{redacted(original)}': {shown} is not UTF-8") from None


def redacted(text: str) -> str:
    """`text` as messages and logs may show it: the path attributes that name a token or an
    object, `...` for anything else (a `pin-value` or a stray PIN in the path, every query
    attribute), so no secret ever reaches a message, whatever its case or encoding."""
    head, sep, _ = text.partition("?")
    if not head.lower().startswith("pkcs11:"):
        return "(not a pkcs11: URI)"
    kept = []
    for item in head[len("pkcs11:"):].split(";"):
        name, equals, _ = item.partition("=")
        shown = equals and unquote_to_bytes(name).decode("utf-8", "replace").lower() in PATH_ATTRIBUTES
        kept.append(item if shown else "...")
    return "pkcs11:" + ";".join(kept) + ("?..." if sep else "")
