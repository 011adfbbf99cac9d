"""The emulated card's half of the vpcd protocol: jcecard's virtual OpenPGP card as a vpcd card.

vsmartcard's pcscd driver (libifdvpcd) listens on a TCP port and treats whoever connects as the card
in its reader. Every message either way is a 2-byte big-endian length and that many bytes. A 1-byte
message from the reader is a control code (power off, power on, reset, "send your ATR"); anything
longer is a command APDU, answered with the response APDU. Closing the connection is removing the
card. This runs inside the card simulator's private network namespace (see cardsim.py), so the
port is not reachable from the host's network.

jcecard does not know SELECT DATA (INS A5), which OpenSC's OpenPGP driver sends before reading a
key's attributes: it is answered 9000 here (the card has one key per slot, so there is nothing to
select).

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


def serve(storage: Path, port: int) -> None:
    from jcecard.main import OpenPGPCard  # the test extra; imported late so --help works without it

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
