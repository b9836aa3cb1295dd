#!/usr/bin/env python3
"""Writes the LZO1X and LZ4 known-answer vectors of openvpn-wire's decompression tests
(crates/openvpn-wire/testdata/compress/) with the reference C libraries, as OpenVPN 2.6 links
them: python-lzo (liblzo2: lzo1x_1 as OpenVPN compresses, lzo1x_999 for its richer
encodings) and lz4 (liblz4 block format). The inputs are made by the same functions as
compress.rs's tests (`vector_input`).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install python-lzo lz4   # needs liblzo2-dev
    /tmp/v/bin/python scripts/compress-vectors.py
"""
import os
import sys

import lz4.block
import lzo

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "openvpn-wire",
                   "testdata", "compress")
MASK = (1 << 64) - 1


def lcg(seed, n):
    """n pseudo-random bytes: the top byte of a 64-bit LCG (Knuth's MMIX constants)."""
    x, out = seed, bytearray()
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK
        out.append(x >> 56)
    return bytes(out)


def text(lines):
    return "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7}\n"
                   for i in range(lines)).encode()


def counter(lines):
    return "".join(f"{i:08x} {i * i % 99991}\n" for i in range(lines)).encode()


def icmp():
    """An IPv4 echo reply of `ping -p 00 -s 1000` (header bytes fixed, payload zero)."""
    return bytes.fromhex("4500 0404 1234 0000 4001 0000 0a08 0001 0a08 0006"
                         "0000 abcd 0001 0001") + bytes(1000 - 8) + lcg(9, 8)


INPUTS = {
    "icmp": icmp(),
    "text": text(24),
    "random": lcg(1, 1400),
    # Far matches (> 16 KiB back: LZO's M4) and long runs.
    "big": text(40) + counter(1200) + text(40) + lcg(3, 2000) + counter(1200)[:3000] + bytes(3000),
    "one": b"\x45",
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in INPUTS.items():
        files = {
            f"{name}.lzo1x_1": lzo.compress(data, 1, False),
            f"{name}.lzo1x_999": lzo.compress(data, 9, False),
            f"{name}.lz4": lz4.block.compress(data, store_size=False),
            f"{name}.lz4hc": lz4.block.compress(data, mode="high_compression", store_size=False),
        }
        for f, blob in files.items():
            with open(os.path.join(OUT, f), "wb") as fh:
                fh.write(blob)
            print(f"{f}: {len(data)} -> {len(blob)} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
