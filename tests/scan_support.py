"""Shared pieces of the `runtrace scan` tests: a tiny trained model, random-weight models, trace files,
and a real (ZipCrypto) encrypted zip archive.  No malware anywhere: traces are synthetic or derived."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

from runtrace.scan.synthetic import synthetic_trace
from runtrace.trace.formats.native import save_trace

TINY_MODEL = Path(__file__).parent / "fixtures" / "models" / "tiny-bsm"
PARITY_MODELS = Path(__file__).parent / "fixtures" / "models" / "parity"


def tiny_model_dir() -> Path:
    """A small BSM model trained on synthetic traces (planted block = malicious), committed rather than
    trained here: training's last bits differ between CPUs, and explanations need one fixed model.
    scripts/make_test_model.py made it; its PROVENANCE.md says how and what it scores."""
    return TINY_MODEL


def random_model(out: Path, representation: str, seed: int = 0, **config):
    """A random-weight model of the given configuration, saved with its graphs (slow: exporting takes
    10-20 s; fast tests use the committed ones in `parity_model_dir`)."""
    from runtrace.scan.synthetic import random_weight_model

    return random_weight_model(out, representation, seed=seed, **config)


def parity_model_dir(name: str) -> Path:
    """A committed random-weight model (scripts/make_parity_models.py; PARITY_MODELS names them)."""
    return PARITY_MODELS / name


def write_traces(directory: Path, specs: dict[str, tuple[bool, int, dict]]) -> dict[str, Path]:
    """name -> (malicious, seed, synthetic_trace keyword arguments); returns name -> .rtrace path."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (malicious, seed, kwargs) in specs.items():
        out[name] = save_trace(synthetic_trace(malicious, seed, **kwargs), directory / f"{name}.rtrace")
    return out


# --- a real encrypted zip (traditional PKWARE encryption), written by hand: zipfile cannot -------------


class _ZipCrypto:
    def __init__(self, password: bytes) -> None:
        self.keys = [0x12345678, 0x23456789, 0x34567890]
        for byte in password:
            self._update(byte)

    @staticmethod
    def _crc(crc: int, byte: int) -> int:
        return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def _update(self, byte: int) -> None:
        k0, k1, k2 = self.keys
        k0 = self._crc(k0, byte)
        k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k2 = self._crc(k2, (k1 >> 24) & 0xFF)
        self.keys = [k0, k1, k2]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            temp = (self.keys[2] | 2) & 0xFFFF
            out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
            self._update(byte)
        return bytes(out)


def encrypted_zip(path: Path, members: dict[str, bytes], password: bytes) -> Path:
    """Stored (uncompressed) members, each encrypted with `password`."""
    local, central = bytearray(), bytearray()
    for name, data in members.items():
        crc = zlib.crc32(data)
        header = bytes(range(11)) + bytes([crc >> 24])  # the last byte lets readers check the password
        body = _ZipCrypto(password).encrypt(header + data)
        encoded = name.encode()
        offset = len(local)
        fields = struct.pack("<HHHHHIII", 20, 1, 0, 0, 0, crc, len(body), len(data))
        local += b"PK\x03\x04" + fields + struct.pack("<HH", len(encoded), 0) + encoded + body
        central += (
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fields
            + struct.pack("<HHHHHI", len(encoded), 0, 0, 0, 0, 0)
            + struct.pack("<I", offset)
            + encoded
        )
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0
    )
    path.write_bytes(bytes(local + central + end))
    with zipfile.ZipFile(path) as check:  # a well-formed archive whose members need the password
        assert all(info.flag_bits & 1 for info in check.infolist())
    return path
