"""A stand-in for msasn1.dll, Windows' ASN.1 encoder library, which the emulator does not have.

Programs that handle certificates or Kerberos tickets themselves (mimikatz' `kull_m_asn1`, for one) set
up an ASN.1 module, an encoder and a decoder at start.  Stubbed, every one of these stdcall functions
returned without popping its arguments (an unknown DLL's argument counts are unknown), and on x86 the
caller's stack was then off by up to 36 bytes: its next return went astray.  Here each function pops
the arguments msasn1.h declares for it, and the set-up succeeds as Windows' does, with zeroed
objects behind the handles (`ASN1_CreateModule` returns a module, `ASN1_Create{En,De}coder` write an
encoder or decoder through their second argument and return `ASN1_SUCCESS`); encoding and decoding
themselves are not emulated (they fail with `ASN1_ERR_INTERNAL`, as a library without the module's
type tables would).
"""

from __future__ import annotations

from collections.abc import Callable

ASN1_SUCCESS = 0
ASN1_ERR_INTERNAL = -1001 & 0xFFFFFFFF
_OBJECT_SIZE = 0x100  # larger than ASN1module_s / ASN1encoding_s / ASN1decoding_s on either architecture


class Msasn1:
    def __init__(self, se, ptr: int) -> None:
        self.se, self.ptr = se, ptr

    def _object(self, tag: str) -> int:
        address = self.se.mem_alloc(_OBJECT_SIZE, tag=f"runtrace.msasn1.{tag}")
        self.se.mem_write(address, bytes(_OBJECT_SIZE))
        return address

    def _create_coder(self, argv: list, tag: str) -> int:
        # (module, ASN1encoding_t *ppEncoderInfo / ASN1decoding_t *ppDecoderInfo, pbBuf, cbBufSize, pParent)
        if not argv[1]:
            return ASN1_ERR_INTERNAL
        self.se.mem_write(argv[1], self._object(tag).to_bytes(self.ptr, "little"))
        return ASN1_SUCCESS

    def handlers(self) -> dict[tuple[str, str], tuple[int, Callable]]:
        """(module, name) -> (stdcall argc, handler(emu, argv)), from msasn1.h's declarations."""
        table = {
            # nVersion, eRule, dwFlags, cPDUs, apfnEncoder, apfnDecoder, apfnFreeMemory, acbStructSize,
            # nModuleName
            "ASN1_CreateModule": (9, lambda emu, a: self._object("module")),
            "ASN1_CloseModule": (1, lambda emu, a: 0),
            "ASN1_CreateEncoder": (5, lambda emu, a: self._create_coder(a, "encoder")),
            "ASN1_CreateDecoder": (5, lambda emu, a: self._create_coder(a, "decoder")),
            "ASN1_CloseEncoder": (1, lambda emu, a: 0),
            "ASN1_CloseEncoder2": (1, lambda emu, a: 0),
            "ASN1_CloseDecoder": (1, lambda emu, a: 0),
            # (encoder, pDataStruct, nPduNum, dwFlags, pbBuf, cbBufSize)
            "ASN1_Encode": (6, lambda emu, a: ASN1_ERR_INTERNAL),
            "ASN1_Decode": (6, lambda emu, a: ASN1_ERR_INTERNAL),
            "ASN1_FreeEncoded": (2, lambda emu, a: 0),
            "ASN1_FreeDecoded": (3, lambda emu, a: 0),
            # (encoder, dotted OID text, ASN1encodedOID_t *): FALSE, nothing converted
            "ASN1BERDotVal2Eoid": (3, lambda emu, a: 0),
        }
        return {("msasn1", name): entry for name, entry in table.items()}
