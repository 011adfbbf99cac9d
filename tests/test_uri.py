"""RFC 7512 URIs: every example of RFC 7512 section 3 parses, and formatting round-trips."""

import pytest

from bindpkcs11.errors import InvalidUri
from bindpkcs11.token.uri import (
    LABEL_FORBIDDEN_ATTRIBUTES, Pkcs11Uri, UnsafeKeyLabel, format_uri, key_uri, parse_key_label, parse_uri,
)

RFC7512_EXAMPLES = [
    "pkcs11:",
    "pkcs11:object=my-pubkey;type=public",
    "pkcs11:object=my-key;type=private?pin-source=file:/etc/token",
    "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
    "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial="
    "?pin-source=file:/etc/token_pin",
    "pkcs11:object=my-sign-key;type=private?module-name=mypkcs11",
    "pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1",
    "pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin",
    "pkcs11:slot-description=Sun%20Metaslot",
    "pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;library-description=Soft%20Token%20Library;"
    "library-version=1.23",
    "pkcs11:token=My%20token%25%20created%20by%20Joe;library-version=3;id=%01%02%03%Ba%dd%Ca%fe",
    "pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert",
    "pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;object=my-certificate;type=cert",
    "pkcs11:token=my-token;object=my-certificate;type=cert;vendor-aaa=value-a"
    "?pin-source=file:/etc/token_pin&vendor-bbb=value-b",
]


@pytest.mark.parametrize("text", RFC7512_EXAMPLES)
def test_rfc_examples_parse_and_round_trip(text):
    uri = parse_uri(text)
    assert parse_uri(format_uri(uri)) == uri


def test_rfc_example_values_are_decoded():
    uri = parse_uri(RFC7512_EXAMPLES[3])
    assert uri.token == "The Software PKCS#11 Softtoken"
    assert uri.path["manufacturer"] == "Snake Oil, Inc."
    assert uri.path["serial"] == ""
    assert uri.id == bytes.fromhex("69953e5cf4bdec91")
    assert uri.type == "cert"
    assert uri.query["pin-source"] == "file:/etc/token_pin"
    assert parse_uri(RFC7512_EXAMPLES[9]).id == bytes([1, 2, 3, 0xBA, 0xDD, 0xCA, 0xFE])
    assert parse_uri(RFC7512_EXAMPLES[10]).token == "A name with a substring %;"
    assert parse_uri(RFC7512_EXAMPLES[11]).token == "Name with a small A with acute: \u00e1"


def test_key_uri_is_what_bind_label_holds():
    text = key_uri("dnssec token", "example.test-zsk-12345")
    assert text == "pkcs11:token=dnssec%20token;object=example.test-zsk-12345"
    assert parse_uri(text).object == "example.test-zsk-12345"


def test_format_orders_path_attributes_and_encodes():
    uri = Pkcs11Uri(path={"object": "a;b", "token": "t"}, id=b"\x01\xff")
    assert format_uri(uri) == "pkcs11:token=t;object=a%3Bb;id=%01%FF"


@pytest.mark.parametrize("text, reason", [
    ("pkcs12:token=x", "must start with 'pkcs11:'"),
    ("pkcs11:token", "is not name=value"),
    ("pkcs11:token=a;token=b", "appears twice"),
    ("pkcs11:type=secret", "type must be one of"),
    ("pkcs11:token=%FF", "is not UTF-8"),
])
def test_bad_uris_say_why(text, reason):
    with pytest.raises(InvalidUri, match=reason):
        parse_uri(text)


def test_pin_value_is_redacted_in_errors():
    with pytest.raises(InvalidUri) as error:
        parse_uri("pkcs11:token?pin-value=secret123")
    assert "secret123" not in str(error.value)


@pytest.mark.parametrize("text", [
    "pkcs11:token=t;object=o?pin-value=%FFsecret123",  # a non-UTF-8 value
    "pkcs11:token=t;object=o?secret123",  # a query item without '='
    "pkcs11:token=t;object=o?pin-source=secret123&pin-source=secret123",  # given twice
])
def test_query_part_is_never_quoted_in_errors(text):
    with pytest.raises(InvalidUri) as error:
        parse_uri(text)
    assert "secret123" not in str(error.value)


def test_rfc_examples_with_a_pin_or_module_parse_but_are_no_key_label():
    """RFC 7512 allows pin-source, pin-value, module-name, module-path; a key label does not."""
    refused = [text for text in RFC7512_EXAMPLES
               if any(name in parse_uri(text).query for name in LABEL_FORBIDDEN_ATTRIBUTES)]
    assert len(refused) == 6
    for text in refused:
        with pytest.raises(UnsafeKeyLabel):
            parse_key_label(text)


@pytest.mark.parametrize("text, reason", [
    ("pkcs11:token=t;object=o?pin-value=secret123", "'pin-value'"),
    ("pkcs11:token=t;object=o?PIN-SOURCE=secret123", "'pin-source'"),
    ("pkcs11:token=t;object=o;module-path=secret123", "'module-path'"),
    ("pkcs11:token=t;object=o?x=1&module-name=secret123", "'module-name'"),
    ("pkcs11:token=t", "names no key"),
    ("PKCS11:token=t;object=o", "lower case"),
])
def test_key_label_check_names_the_problem_never_the_value(text, reason):
    with pytest.raises(InvalidUri, match=reason) as error:
        parse_key_label(text)
    assert "secret123" not in str(error.value)


def test_key_label_accepts_what_keygen_writes():
    uri = parse_key_label(key_uri("tok?pin-value=x", "zsk;module-path=/y", b"\x01"))
    assert (uri.token, uri.object, uri.id, uri.query) == ("tok?pin-value=x", "zsk;module-path=/y", b"\x01", {})


@pytest.mark.parametrize("text", [
    "pkcs11:token=x;pin-value=1234;bad",       # a PIN attribute in the path, then an error
    "pkcs11:token=x;1234",                     # a bare PIN typed into the path
    "PKCS11:token=x;pin-value=1234;object=k",  # upper-case scheme
    "pkcs11:token=x;pin%2Dvalue=1234;object=k",
])
def test_a_pin_in_the_path_part_never_reaches_a_message(text):
    from bindpkcs11.token.uri import parse_key_label

    with pytest.raises(InvalidUri) as error:
        parse_key_label(text)
    assert "1234" not in str(error.value)
