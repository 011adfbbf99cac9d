"""The emulated card's half of the vpcd protocol: jcecard's virtual OpenPGP card as a vpcd card.

vsmartcard's pcscd driver (libifdvpcd) listens on a TCP port and treats whoever connects as the card
in its reader. Every message either way is a 2-byte big-endian length and that many bytes. A 1-byte
message from the reader is a control code (power off, power on, reset, "send your ATR"); anything
longer is a command APDU, answered with the response APDU. Closing the connection is removing the
card. This runs inside the card simulator's private network namespace (see cardsim.py), so the
port is not reachable from the host's network.

jcecard does not know SELECT DATA (INS A5), which OpenSC's OpenPGP driver sends before reading a
key's attributes: it is answered 9000 here (the card has one key per slot, so there is nothing to
select). Key import (`key import` into the card) needs two more: jcecard reads an imported RSA
key's public exponent as 3 bytes while its own algorithm attributes announce 32 bits, as OpenSC
sends it (the exponent is trimmed to 3 bytes before jcecard reads it), and it keeps no public key
for an imported key, so OpenSC could not read it back (it is derived from the private key here).

Run as `python -m bindpkcs11.cardbridge --storage DIR --port N`; exits when the reader goes away.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import time
from pathlib import Path

VPCD_PORT = 0x8C7B  # vpcd's default channel (35963), the one /etc/reader.conf.d/vpcd names
CONNECT_TIMEOUT = 20.0
POWER_OFF, POWER_ON, RESET, GET_ATR = 0x00, 0x01, 0x02, 0x04
INS_SELECT_DATA = 0xA5
SW_OK = b"\x90\x00"


class ReaderGone(Exception):
    """The reader closed the connection (pcscd stopped)."""


def receive(connection: socket.socket) -> bytes:
    """One length-prefixed message from the reader."""
    size = int.from_bytes(_exactly(connection, 2), "big")
    return _exactly(connection, size)


def send(connection: socket.socket, payload: bytes) -> None:
    connection.sendall(len(payload).to_bytes(2, "big") + payload)


def _exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ReaderGone()
        data += chunk
    return data


def answer(card, message: bytes) -> bytes | None:
    """What the card says to one reader message; None for control codes that need no answer."""
    if len(message) == 1:
        code = message[0]
        if code == GET_ATR:
            return card.get_atr()
        if code == POWER_ON:
            card.power_on()
        elif code == POWER_OFF:
            card.power_off()
        elif code == RESET:
            card.reset()
        return None
    if len(message) >= 4 and message[1] == INS_SELECT_DATA:
        return SW_OK
    return card.process_apdu(message)


def connect(port: int, deadline: float) -> socket.socket:
    """Connect to vpcd, retrying while pcscd is still loading its driver."""
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def patch_key_import() -> None:
    """Patch jcecard's RSA key loader (imports, and the imported key reloaded at each start) to
    take e in the length its algorithm attributes give, zero-padded as OpenSC sends it, and its
    key import to keep the public key (the 7F49 template a generated key has)."""
    from jcecard.crypto_backend import CryptoBackend, KeyType
    from jcecard.main import OpenPGPCard
    from jcecard.tlv import TLVEncoder

    original = CryptoBackend._load_raw_rsa_key
    if getattr(original, "trims_exponent", False):
        return

    def load(self, key_type, raw_key: bytes, algorithm) -> bool:
        e_bytes, half = (algorithm.param2 + 7) // 8, algorithm.param1 // 16
        if e_bytes > 3 and len(raw_key) == e_bytes + 2 * half and not any(raw_key[:e_bytes - 3]):
            raw_key = raw_key[e_bytes - 3:]
        return original(self, key_type, raw_key, algorithm)

    load.trims_exponent = True  # type: ignore[attr-defined]
    CryptoBackend._load_raw_rsa_key = load
    imported = OpenPGPCard._handle_key_import

    def handle_key_import(self, data: bytes):
        from cryptography.hazmat.primitives.serialization import load_der_private_key

        reply = imported(self, data)
        slots = {KeyType.SIGNATURE: self.card_state.key_sig,
                 KeyType.DECRYPTION: self.card_state.key_dec,
                 KeyType.AUTHENTICATION: self.card_state.key_aut}
        for key_type, slot in slots.items():
            der = self._crypto._der_keys.get(key_type)
            if der is None or not slot.private_key_data or slot.public_key_data:
                continue
            numbers = load_der_private_key(der, None).public_key().public_numbers()
            n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
            e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
            slot.public_key_data = TLVEncoder.encode(
                0x7F49, TLVEncoder.encode(0x81, n) + TLVEncoder.encode(0x82, e))
            self.save_state()
        return reply

    OpenPGPCard._handle_key_import = handle_key_import


def serve(storage: Path, port: int) -> None:
    from jcecard.main import OpenPGPCard  # the test extra; imported late so --help works without it

    patch_key_import()
    logging.getLogger().setLevel(logging.WARNING)
    card = OpenPGPCard(storage_path=storage)
    connection = connect(port, time.monotonic() + CONNECT_TIMEOUT)
    connection.settimeout(None)
    print("card inserted", flush=True)  # cardsim.py waits for this line
    try:
        while True:
            reply = answer(card, receive(connection))
            if reply is not None:
                send(connection, reply)
    except ReaderGone:
        pass
    finally:
        card.save_state()
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="jcecard's OpenPGP card as a vpcd virtual card")
    parser.add_argument("--storage", required=True, type=Path, help="the card's state directory")
    parser.add_argument("--port", type=int, default=VPCD_PORT)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # runs serve's finally: state saved
    try:
        serve(args.storage, args.port)
    except OSError as error:
        print(f"cardbridge: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
