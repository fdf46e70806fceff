"""Shared pieces of the `runtrace scan` tests: a tiny trained model, random-weight models, trace files,
and a real (ZipCrypto) encrypted zip archive.  No malware anywhere: traces are synthetic."""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from runtrace.scan.synthetic import synthetic_corpus, synthetic_trace
from runtrace.trace.formats.native import save_trace

TINY_MODEL = Path(__file__).parent / "fixtures" / "models" / "tiny-bsm"


def tiny_model_dir() -> Path:
    """A small BSM model trained on synthetic traces (planted block = malicious), committed rather than
    trained here: training's last bits differ between CPUs, and explanations need one fixed model.
    scripts/make_test_model.py made it; its PROVENANCE.md says how and what it scores."""
    return TINY_MODEL


def random_model(out: Path, representation: str, seed: int = 0, **config):
    """A model with the given configuration and random (not trained) weights, large enough that its
    outputs vary, saved to `out`.  Fitting one epoch gives it real vocabularies."""
    import torch

    from runtrace.models.bsm import BsmLstmConfig
    from runtrace.models.estimator import VocabularyConfig, make_classifier
    from runtrace.models.ism import IsmLstmConfig
    from runtrace.models.train import TrainConfig
    from runtrace.represent.dataset import build_dataset
    from runtrace.represent.windows import WindowConfig

    torch.set_num_threads(1)
    traces, labels = synthetic_corpus(8, seed=seed)
    data = build_dataset(traces, labels, representation=representation)
    model_keys = {"embed_dim", "insn_embed_dim", "block_dim", "hidden_size", "num_layers", "bidirectional",
                  "pooling", "block_encoder", "block_id_embedding", "max_block_tokens"}  # fmt: skip
    model_args = {k: v for k, v in config.items() if k in model_keys}
    sizes = {"hidden_size": 8}
    if representation == "bsm":
        model = BsmLstmConfig(**{"insn_embed_dim": 6, "block_dim": 10, **sizes, **model_args})
    else:
        model = IsmLstmConfig(**{"embed_dim": 6, **sizes, **model_args})
    clf = make_classifier(
        representation,
        model=model,
        window=config.get("window", WindowConfig("sampled", length=48, count=3)),
        aggregation=config.get("aggregation", "mean"),
        train=TrainConfig(epochs=1, batch_size=8, progress=False, seed=seed, val_fraction=0.0),
        vocabulary=VocabularyConfig(min_documents=1),
        block_vocabulary=VocabularyConfig(min_documents=1),
    )
    clf.fit(data, np.arange(len(data)))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in clf.net.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.6)
            if name.endswith(("embed.weight", "block_ids.weight")):
                p[0] = 0.0  # the padding row, which training never moves from zero
    clf.save(out)
    return clf


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
