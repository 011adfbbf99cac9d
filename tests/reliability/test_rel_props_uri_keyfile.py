"""Property tests: RFC 7512 URIs and BIND key files survive format -> parse unchanged.

Labels come from tokens and operators, so they hold anything: unicode, '%', ';', '?', '/', '='.
A value that changes on the way through a Label names another key (or, worse, smuggles a query
attribute such as pin-value into the URI); a key file that reads back differently loses a key.
Example counts stay modest so the whole file runs in a few seconds.
"""

from __future__ import annotations

import string

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bindpkcs11.dnssec import algorithms
from bindpkcs11.dnssec.dnskey import int_bytes
from bindpkcs11.dnssec.keyfile import (
    TIMING_FIELDS, Timing, read_key_pair, token_private_fields, write_key_pair,
)
from bindpkcs11.token.uri import (
    LABEL_FORBIDDEN_ATTRIBUTES, OBJECT_TYPES, Pkcs11Uri, format_uri, key_uri, parse_key_label,
    parse_uri,
)

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYFILE_PROPS = settings(max_examples=60, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow,
                                                HealthCheck.function_scoped_fixture])

# Characters with a meaning in RFC 7512 or in BIND's key files, mixed into every label.
TRICKY = "%;?/=&:#@!$'()*+,[]| \t\\\"\x00\x7f\u00e1\u20ac\U0001f511"
labels = st.text(alphabet=st.one_of(st.sampled_from(TRICKY), st.characters(exclude_categories=["Cs"])),
                 max_size=40)
raw_ids = st.binary(max_size=20)
vendor_names = st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=12).filter(
    lambda name: name not in ("id", "type", *LABEL_FORBIDDEN_ATTRIBUTES))


@st.composite
def uris(draw) -> Pkcs11Uri:
    """Any URI bindpkcs11 could meet: token, object, type, id, vendor path and query attributes."""
    path = {"token": draw(labels), "object": draw(labels)}
    if draw(st.booleans()):
        path["type"] = draw(st.sampled_from(OBJECT_TYPES))
    for name in draw(st.lists(vendor_names, max_size=2, unique=True)):
        if name not in path:
            path[name] = draw(labels)
    query = {name: draw(labels) for name in draw(st.lists(vendor_names, max_size=2, unique=True))}
    return Pkcs11Uri(path=path, id=draw(st.one_of(st.none(), raw_ids)), query=query)


@PROPS
@given(uris())
def test_uri_format_then_parse_is_identity(uri):
    text = format_uri(uri)
    assert parse_uri(text) == uri
    assert format_uri(parse_uri(text)) == text  # canonical: formatting again changes nothing


@PROPS
@given(labels, labels, st.one_of(st.none(), raw_ids))
def test_key_uri_round_trips_and_is_always_an_acceptable_key_label(token, label, object_id):
    """Whatever the operator calls a token or key, the Label names exactly that key, no query."""
    text = key_uri(token, label, object_id)
    uri = parse_key_label(text)
    assert (uri.token, uri.object, uri.id, uri.query) == (token, label, object_id, {})
    assert "?" not in text and "\x00" not in text


@PROPS
@given(labels, labels, st.sampled_from(LABEL_FORBIDDEN_ATTRIBUTES), labels)
def test_a_label_naming_a_pin_or_module_is_never_acceptable(token, label, attribute, value):
    uri = Pkcs11Uri(path={"token": token, "object": label}, query={attribute: value})
    try:
        parse_key_label(format_uri(uri))
    except ValueError as error:  # InvalidUri is a UsageError, which is no ValueError
        raise AssertionError(error) from None
    except Exception as error:  # noqa: BLE001 - the type is checked below
        assert type(error).__name__ == "UnsafeKeyLabel"
        assert attribute in str(error)
        if len(value) > 3:
            assert value not in str(error).split(": ", 1)[1]
    else:
        raise AssertionError("a label with a PIN or module was accepted")


# --- key files -------------------------------------------------------------------------------

ALGORITHMS = [algorithms.by_number(n) for n in (8, 10, 13, 14, 15)]
KEY_BYTES = {13: 64, 14: 96, 15: 32}
BIND_TIMES = st.integers(min_value=0, max_value=2**32 - 1)  # BIND keeps 32-bit times
zone_labels = st.text(alphabet=string.ascii_letters + string.digits + "-_*;()\" \\$@", min_size=1,
                      max_size=12)
zones = st.lists(st.one_of(zone_labels, st.sampled_from(["dnskey", "IN", "3600", "K"])),
                 min_size=1, max_size=3).map(
    lambda parts: dns.name.Name([p.encode() for p in parts] + [b""]))


@st.composite
def dnskeys(draw):
    """(DNSKEY, RSA modulus, RSA exponent) with the shape each algorithm's key really has."""
    algorithm = draw(st.sampled_from(ALGORITHMS))
    flags = draw(st.sampled_from([256, 257, 385]))
    modulus = exponent = 0
    if algorithm.is_rsa:
        exponent = draw(st.sampled_from([3, 65537, 2**255 + 1]))
        modulus = draw(st.integers(min_value=2**1023, max_value=2**4096 - 1)) | 1
        e = int_bytes(exponent)
        key = (bytes([len(e)]) if len(e) < 256 else b"\x00" + len(e).to_bytes(2, "big")) + e
        key += int_bytes(modulus)
    else:
        key = draw(st.binary(min_size=KEY_BYTES[algorithm.number], max_size=KEY_BYTES[algorithm.number]))
    rdata = dns.rdtypes.ANY.DNSKEY.DNSKEY(dns.rdataclass.IN, dns.rdatatype.DNSKEY, flags, 3,
                                          algorithm.number, key)
    return rdata, modulus, exponent


@st.composite
def timings(draw) -> Timing:
    values = {name: draw(st.one_of(st.none(), BIND_TIMES)) for name in TIMING_FIELDS[1:]}
    return Timing(created=draw(BIND_TIMES), **values)


@KEYFILE_PROPS
@given(zone=zones, key=dnskeys(), timing=timings(), token=labels, label=labels,
       object_id=st.one_of(st.none(), raw_ids), ttl=st.one_of(st.none(), st.integers(0, 2**31 - 1)))
def test_token_key_file_write_then_read_is_identity(tmp_path_factory, zone, key, timing, token, label,
                                                    object_id, ttl):
    dnskey, modulus, exponent = key
    key_dir = tmp_path_factory.mktemp("keys")
    uri = key_uri(token, label, object_id)
    fields = token_private_fields(dnskey, uri, modulus, exponent)
    key_path, private_path = write_key_pair(key_dir, zone, dnskey, fields, timing, ttl)

    pair = read_key_pair(key_path)
    assert (pair.key_path, pair.private_path) == (key_path, private_path)
    assert pair.zone == zone
    assert pair.dnskey == dnskey
    assert pair.timing == timing
    assert pair.label_uri == uri
    label_uri = parse_key_label(pair.label_uri)
    assert (label_uri.token, label_uri.object, label_uri.id) == (token, label, object_id)
    assert pair.private_fields == dict(fields)
    assert private_path.stat().st_mode & 0o777 == 0o600
