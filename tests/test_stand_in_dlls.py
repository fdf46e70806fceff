"""Stand-ins for DLL functions Speakeasy lacks (tracer revision 19): msasn1.dll's ASN.1 set-up, the untrusted
LSA connection of secur32.dll, ntdll's RtlGetNtVersionNumbers.

Stubbed, each returned without popping its stdcall arguments, and an x86 caller's stack was off from
then on.  Each program here ends with a `ret` that reaches the emulator only if every call popped
exactly its arguments; what a call wrote is passed on to `Sleep`, whose recorded argument shows it.
"""

import struct

from emu_pe import DATA_RVA, DATA_SIZE, IMAGE_BASE, Data, Word, calls
from runtrace.trace.emulate import lsa, msasn1
from runtrace.trace.emulate.emulator import emulate
from runtrace.trace.model import StopReason

SLEEP = "kernel32.dll!Sleep"
DATA = IMAGE_BASE["i386"] + DATA_RVA + DATA_SIZE // 2  # where `calls` programs' data area lies


def _run(steps, data=b""):
    trace = emulate(calls(steps, data), "x", "stand-ins")
    assert trace.meta.stop_reason is StopReason.EXITED, trace.meta.stop_detail
    assert not trace.meta.events or all(e["type"] != "run_error" for e in trace.meta.events)
    return trace


def _results(trace) -> dict[str, int]:
    return {c.name.split(".", 1)[1]: c.result for c in trace.api_calls}


def _sleeps(trace) -> list[int]:
    return [c.args[0] for c in trace.api_calls if c.name == "kernel32.Sleep"]


def test_the_asn1_module_encoder_and_decoder_are_set_up_with_their_arguments_popped():
    trace = _run([
        # nVersion, eRule (BER), dwFlags, cPDUs, encoders, decoders, free functions, sizes, module name
        ("msasn1.dll!ASN1_CreateModule", [0x10000, 0x100, 0, 4, Data(0x100), Data(0x110), Data(0x120),
                                          Data(0x130), 0x6B6E], Data(0x200)),  # fmt: skip
        ("msasn1.dll!ASN1_CreateEncoder", [Word(0x200), Data(0x204), 0, 0, 0]),
        ("msasn1.dll!ASN1_CreateDecoder", [Word(0x200), Data(0x208), 0, 0, 0]),
        (SLEEP, [Word(0x200)]),  # the module
        (SLEEP, [Word(0x204)]),  # the encoder written through the second argument
        (SLEEP, [Word(0x208)]),  # the decoder
        ("msasn1.dll!ASN1_Encode", [Word(0x204), Data(0x300), 0, 0, 0, 0]),
        ("msasn1.dll!ASN1_FreeEncoded", [Word(0x204), 0]),
        ("msasn1.dll!ASN1_CloseEncoder", [Word(0x204)]),
        ("msasn1.dll!ASN1_CloseDecoder", [Word(0x208)]),
        ("msasn1.dll!ASN1_CloseModule", [Word(0x200)]),
    ])  # fmt: skip
    module, encoder, decoder = _sleeps(trace)
    assert module and encoder and decoder and len({module, encoder, decoder}) == 3
    results = _results(trace)
    assert results["ASN1_CreateEncoder"] == results["ASN1_CreateDecoder"] == msasn1.ASN1_SUCCESS
    assert results["ASN1_Encode"] == msasn1.ASN1_ERR_INTERNAL  # no type tables: nothing is encoded


def test_an_untrusted_lsa_connection_finds_packages_and_the_nt_version_is_windows_10():
    # LSA_STRINGs {Length, MaximumLength, Buffer} at 0x00 and 0x10 of the data area, their texts after.
    names = (b"Kerberos", b"MICROSOFT_AUTHENTICATION_PACKAGE_V1_0")
    data = b"".join(struct.pack("<HHI", len(n), len(n) + 1, DATA + 0x40 * (i + 1)).ljust(0x10, b"\0")
                    for i, n in enumerate(names)).ljust(0x40, b"\0")  # fmt: skip
    data += b"".join(n.ljust(0x40, b"\0") for n in names)
    trace = _run([
        ("secur32.dll!LsaConnectUntrusted", [Data(0x200)]),
        ("secur32.dll!LsaLookupAuthenticationPackage", [Word(0x200), Data(0x00), Data(0x204)]),
        ("secur32.dll!LsaLookupAuthenticationPackage", [Word(0x200), Data(0x10), Data(0x208)]),
        (SLEEP, [Word(0x200)]),  # the handle
        (SLEEP, [Word(0x204)]),  # Kerberos' package id
        (SLEEP, [Word(0x208)]),  # MSV1_0's
        ("ntdll.dll!RtlGetNtVersionNumbers", [Data(0x210), Data(0x214), Data(0x218)]),
        (SLEEP, [Word(0x210)]),  # major
        (SLEEP, [Word(0x214)]),  # minor
        (SLEEP, [Word(0x218)]),  # build
    ], data)  # fmt: skip
    handle, kerberos, msv, major, minor, build = _sleeps(trace)
    assert handle == lsa.LSA_HANDLE and _results(trace)["LsaConnectUntrusted"] == lsa.STATUS_SUCCESS
    assert msv == 0 and kerberos not in (0, 0xFFFFFFFF)  # MSV1_0 is package 0, as on Windows
    assert (major, minor, build) == (10, 0, 0xF0000000 | 19045)
