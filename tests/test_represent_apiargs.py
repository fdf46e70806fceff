"""API argument classes (`represent/apiargs.py`) and the `api_args` encoding option: calls as the tracer
records them become a few tokens of a fixed vocabulary, and without the option every sequence is what it
was before the option existed."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest

from runtrace.represent.apiargs import MAX_STRING, MAX_TOKENS_PER_CALL, VOCABULARY, argument_tokens
from runtrace.represent.dataset import DatasetError, SequenceDataset, build_dataset
from runtrace.represent.encode import api_items, encode_trace
from runtrace.represent.normalise import api_token
from runtrace.scan.sequence import origins
from runtrace.scan.synthetic import synthetic_trace
from runtrace.trace.model import ApiCall, Trace

SELF = "C:\\Windows\\system32\\" + "ab" * 32 + ".exe"  # where the emulator runs the sample

# Calls spelled as Speakeasy's handlers record them (taken from the shapes seen in corpus traces:
# flags as names or as integers, hives as names or as sign-extended handles, sockaddrs as "ip:port").
CASES = [
    # files
    (
        "KERNEL32.CreateFileW",
        ("C:\\users\\Public\\UKjry.exe", "GENERIC_WRITE", 0, 0, "CREATE_ALWAYS", 2, 0),
        {"arg:path:profile", "arg:ext:exe"},
    ),
    # the sample itself: where the emulator put it and under which extension are not its behaviour
    ("KERNEL32.GetFileAttributesW", (SELF,), {"arg:path:self"}),
    # the emulator's answers to "where am I", "where is temp": the API's name says what was asked
    ("KERNEL32.GetModuleFileNameA", (0, "C:\\Windows\\system32\\svchost.exe", 0x104), set()),
    ("KERNEL32.GetTempPathA", (0x104, "C:\\Windows\\temp\\"), set()),
    (
        "kernel32.CopyFileW",
        (SELF, "C:\\Windows\\system32\\svchоst.exe", 0),
        {"arg:path:self", "arg:path:system", "arg:ext:exe"},
    ),
    ("KERNEL32.DeleteFileA", ("C:\\Windows\\temp\\\\xDrv.sys",), {"arg:path:temp", "arg:ext:sys"}),
    (
        "KERNEL32.DeleteFileW",
        ("C:\\Windows\\system32\\Drivers\\{6AB5E732}.sys",),
        {"arg:path:drivers", "arg:ext:sys"},
    ),
    (
        "KERNEL32.CopyFileA",
        (
            "x.exe",
            "C:\\Users\\u\\AppData\\Roaming\\Microsoft\\Windows\\Start Menu\\Programs\\Startup\\x.lnk",
            0,
        ),
        {"arg:ext:exe", "arg:path:startup", "arg:ext:lnk"},
    ),
    ("KERNEL32.CreateFileA", ("\\\\.\\PhysicalDrive0", "GENERIC_WRITE"), {"arg:path:device"}),
    ("kernel32.CreateNamedPipeW", ("\\\\.\\pipe\\LOCAL\\im", 3, 0), {"arg:path:pipe"}),
    ("KERNEL32.CreateFileW", ("\\\\fileserver\\share\\run.bat",), {"arg:path:share", "arg:ext:script"}),
    ("ntdll.NtOpenFile", (0, 0xC0110000, 0, "\\??\\C:\\Windows\\temp\\\\TH_1.tmp", 3), {"arg:path:temp"}),
    ("kernel32.FindFirstFileW", ("*.*", 0x12118E8), {"arg:path:wildcard"}),
    (
        "KERNEL32.FindFirstFileA",
        ("C:\\Users\\u\\Documents\\*.doc", 0),
        {"arg:path:profile", "arg:path:wildcard"},
    ),
    # an unexpanded %APPDATA% leaves a relative path: not the Windows directory; one that names no file
    # of a kind we class is not taken for a path (mutex names, "host\\user" strings are not)
    (
        "KERNEL32.DeleteFileA",
        ("\\Mozilla Firefox\\bin\\UpdateFirefox.exe",),
        {"arg:path:other", "arg:ext:exe"},
    ),
    ("KERNEL32.FindFirstFileA", ("\\Microsoft\\Windows\\LnkClass.dat", 0), set()),
    ("KERNEL32.CreateMutexA", (0, 1, "GLOBAL\\ADR32"), set()),
    ("SHELL32.SHGetFolderPathW", (0, "CSIDL_APPDATA", 0, 0, 0), {"arg:path:appdata"}),
    ("shell32.SHGetFolderPathW", (0, "CSIDL_STARTUP", 0, 0, 0), {"arg:path:startup"}),
    # every program loads libraries by name; a library by path is classed
    ("KERNEL32.LoadLibraryA", ("psapi.dll",), set()),
    (
        "KERNEL32.LoadLibraryW",
        ("C:\\Users\\u\\AppData\\Local\\Temp\\x.dll",),
        {"arg:path:temp", "arg:ext:dll"},
    ),
    ("KERNEL32.FindNextFileW", (0x1804, "cmd.exe"), {"arg:ext:exe"}),
    # text helpers only move a string that a later call uses; bytes read as text are no name
    ("MSVCRT.strcat", ("C:\\Windows\\temp\\x.exe", "\\"), set()),
    ("USER32.wsprintfW", ("C:\\Windows\\system32\\x.dll", "%s%S.dll"), set()),
    ("KERNEL32.MultiByteToWideChar", (0x4E4, 1, " \x01\x02\\\x03abc", 0x100), set()),
    ("KERNEL32.CreateFileA", ("C:\\Windows\\x\x01.exe",), set()),
    # registry
    (
        "advapi32.RegOpenKeyExW",
        (0xFFFFFFFF80000002, "Software\\Microsoft\\Windows\\CurrentVersion\\Run", 0, 2, 0),
        {"arg:reg:hklm", "arg:reg:run"},
    ),
    (
        "ADVAPI32.RegCreateKeyExA",
        (
            0x80000001,
            "HKEY_CURRENT_USER\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run\\",
            0,
            0,
            0,
            0xF003F,
            0,
            0,
            0,
        ),
        {"arg:reg:hkcu", "arg:reg:run"},
    ),
    (
        "ADVAPI32.RegOpenKeyExA",
        ("HKEY_CLASSES_ROOT", "\\http\\shell\\open\\command", 0, 1, 0),
        {"arg:reg:hkcr", "arg:reg:shell"},
    ),
    (
        "ADVAPI32.RegCreateKeyExW",
        (0xFFFFFFFF80000002, "\\System\\CurrentControlSet\\Services\\ProcExp64", 0),
        {"arg:reg:hklm", "arg:reg:services"},
    ),
    ("ADVAPI32.RegSetValueExA", (0, "ServiceDll", 0, 2, SELF, 0x59), {"arg:reg:services", "arg:path:self"}),
    (
        "ADVAPI32.RegSetValueExW",
        (0x180, "NetWire", 0, 1, "C:\\Windows\\system32\\x.exe", 0x58),
        {"arg:path:system", "arg:ext:exe"},
    ),
    (
        "ntdll.NtOpenKey",
        (0, 0x20119, "\\Registry\\Machine\\SOFTWARE\\Microsoft\\Cryptography"),
        {"arg:reg:hklm", "arg:reg:crypto"},
    ),
    (
        "ADVAPI32.RegOpenKeyA",
        ("HKEY_LOCAL_MACHINE", "SOFTWARE\\Policies\\Microsoft\\Windows Defender", 0),
        {"arg:reg:hklm", "arg:reg:policies", "arg:reg:security"},
    ),
    (
        "ADVAPI32.RegOpenKeyExA",
        ("HKEY_LOCAL_MACHINE", "SOFTWARE\\SupportSoft\\ProviderList", 0, 1, 0),
        {"arg:reg:hklm", "arg:reg:other"},
    ),
    ("ADVAPI32.RegQueryInfoKeyA", ("HKEY_USERS", 0, 0), {"arg:reg:hku"}),
    # network
    ("WS2_32.connect", (4, "10.1.2.3:443", 0x10), {"arg:net:ip", "arg:port:web"}),
    ("WS2_32.connect", (4, "10.1.2.3:6667", 0x10), {"arg:net:ip", "arg:port:irc"}),
    ("WS2_32.gethostbyname", ("speakeasy_host",), {"arg:net:localhost"}),
    ("WS2_32.gethostbyname", ("\\\\\\\\",), set()),  # junk, not a share
    ("KERNEL32.OpenProcess", (0, 0, 0), set()),
    ("WS2_32.gethostbyname", ("ship001.strangled.net",), {"arg:net:domain"}),
    ("DNSAPI.DnsQuery_A", ("portgame.bazar", 1, 8, 0, 0, 0), {"arg:net:domain-alt"}),
    (
        "wininet.InternetConnectA",
        (0x20, "cloud.example.com", 0x50, 0, 0, 3, 0, 0),
        {"arg:net:domain", "arg:port:web"},
    ),
    ("WINHTTP.WinHttpConnect", (0x20, "106.185.43.96:80", 0, 0), {"arg:net:ip", "arg:port:web"}),
    (
        "WININET.InternetOpenUrlA",
        (0x20, "http://65.89.173.68/update.exe", 0, 0, "INTERNET_FLAG_RELOAD", 0),
        {"arg:net:http", "arg:net:ip", "arg:ext:exe"},
    ),
    (
        "WININET.InternetCrackUrlW",
        ("https://t1.example.com:8443/PROJECT", 0, 0, 0),
        {"arg:net:https", "arg:net:domain", "arg:port:web"},
    ),
    (
        "WININET.HttpOpenRequestA",
        (0x24, "POST", "/common/oauth2/v2.0/token", 0, 0, 0, "", 0),
        {"arg:net:post"},
    ),
    ("wininet.HttpOpenRequestA", (0x24, 0, "/Xq2a", 0, 0, 0, "", 0), {"arg:net:get"}),
    ("ws2_32.socket", ("AF_INET", "SOCK_STREAM", 6), {"arg:net:tcp"}),
    ("ws2_32.socket", (2, 2, 17), {"arg:net:udp"}),
    ("ws2_32.htons", (25,), {"arg:port:mail"}),
    # processes and threads
    (
        "KERNEL32.CreateProcessW",
        ("C:\\Windows\\System32\\mobsync.exe", 0, 0, 0, 0, "CREATE_NO_WINDOW | CREATE_SUSPENDED", 0, 0, 0, 0),
        {"arg:path:system", "arg:ext:exe", "arg:proc:suspended", "arg:proc:hidden"},
    ),
    (
        "KERNEL32.CreateProcessA",
        (0, "powershell -NoExit dir", 0, 0, 0, 0x4, 0, 0, 0, 0),
        {"arg:cmd:shell", "arg:proc:suspended"},
    ),
    (
        "KERNEL32.CreateProcessW",
        (0, "Rundll32.exe C:\\Windows\\system32\\x.dll,Entry", 0, 0, 1, 0x10, 0, 0, 0, 0),
        {"arg:cmd:lolbin", "arg:ext:exe", "arg:path:system"},
    ),
    (
        "SHELL32.ShellExecuteW",
        (0, "open", "cmd.exe", "/c vssadmin.exe delete shadows /all /quiet", 0, 0),
        {"arg:cmd:shell", "arg:ext:exe", "arg:cmd:recovery", "arg:proc:hidden"},
    ),
    (
        "KERNEL32.WinExec",
        ("cmd /c msiexec /i http://example.com/x.php /q", 0),
        {"arg:cmd:shell", "arg:net:http", "arg:net:domain", "arg:proc:hidden"},
    ),
    (
        "KERNEL32.WriteProcessMemory",
        ("C:\\Windows\\explorer.exe", 0x50000, 0x120D038, 0xDC8, 0),
        {"arg:proc:other", "arg:path:windows", "arg:ext:exe"},
    ),
    ("KERNEL32.VirtualAllocEx", (0x220, 0, 0x1F000, 0x3000, 0x40), {"arg:proc:other", "arg:mem:rwx"}),
    ("kernel32.TerminateProcess", (0xFFFFFFFF, 1), {"arg:proc:self"}),
    ("ntdll.ZwUnmapViewOfSection", (0x248, 0x400000), {"arg:proc:other"}),
    (
        "KERNEL32.CreateRemoteThread",
        (0x248, 0, 0, 0x51000, 0x50000, 4, 0),
        {"arg:proc:other", "arg:thread:suspended"},
    ),
    ("KERNEL32.CreateThread", (0, 0, 0x10001030, 0, 4, 0), {"arg:thread:suspended"}),
    ("KERNEL32.OpenProcess", (0x1FFFFF, 0, 0x434), {"arg:proc:access-write"}),
    ("KERNEL32.OpenProcess", (0x410, 0, 4), {"arg:proc:access-read"}),
    # memory protection
    ("KERNEL32.VirtualAlloc", (0, 0x32C, 0x1000, "PAGE_EXECUTE_READWRITE"), {"arg:mem:rwx"}),
    ("KERNEL32.VirtualAlloc", (0, 0x100000, 0x2000, "PAGE_READWRITE"), {"arg:mem:rw"}),
    ("kernel32.VirtualProtect", (0x10004F05, 0xE6, 0x20, 0x1211F54), {"arg:mem:rx"}),
    (
        "ntdll.NtProtectVirtualMemory",
        (0xFFFFFFFFFFFFFFFF, 0, 0, 0x104, 0),
        {"arg:proc:self", "arg:mem:rw", "arg:mem:guard"},
    ),
    (
        "KERNEL32.VirtualProtectEx",
        (0x220, 0, 1, "PAGE_EXECUTE_READ | PAGE_GUARD", 0),
        {"arg:proc:other", "arg:mem:rx", "arg:mem:guard"},
    ),
    ("KERNEL32.HeapCreate", (0x40000, 0x400000, 0), {"arg:mem:rwx"}),
    ("KERNEL32.HeapCreate", (0, 0x1000, 0), set()),
    # crypto: hashing vs encryption, and the algorithm's class
    ("ADVAPI32.CryptCreateHash", (0x680, "CALG_MD5", 0, 0, 0), {"arg:crypto:hash", "arg:crypto:alg-hash"}),
    ("ADVAPI32.CryptCreateHash", (0x680, 0x800C, 0, 0, 0), {"arg:crypto:hash", "arg:crypto:alg-hash"}),
    ("ADVAPI32.CryptHashData", (0x2804, 0x1211A68, 0x10, 0), {"arg:crypto:hash"}),
    ("ADVAPI32.CryptGenKey", (0x680, 0x6610, 0, 0), {"arg:crypto:key", "arg:crypto:alg-symmetric"}),
    ("ADVAPI32.CryptGenKey", (0x680, 1, 0, 0), {"arg:crypto:key", "arg:crypto:alg-asymmetric"}),
    ("ADVAPI32.CryptEncrypt", (0x2804, 0, 1, 0, 0x1000, 0, 0), {"arg:crypto:encrypt"}),
    ("bcrypt.BCryptDecrypt", (0,), {"arg:crypto:decrypt"}),
    ("bcrypt.BCryptOpenAlgorithmProvider", (0x1211F00, "AES", 0, 0), {"arg:crypto:alg-symmetric"}),
    ("bcrypt.BCryptOpenAlgorithmProvider", (0x1211F00, "SHA256", 0, 0), {"arg:crypto:alg-hash"}),
    ("ADVAPI32.CryptGenRandom", (0x680, 0x80, 0x12111B8), {"arg:crypto:random"}),
    ("CRYPT32.CryptStringToBinaryA", ("QUJD", 0, 1, 0, 0, 0, 0), {"arg:crypto:encoding"}),
    # a provider's name says what it can do, not what is used
    (
        "advapi32.CryptAcquireContextA",
        (0, 0, "Microsoft Enhanced RSA and AES Cryptographic Provider", 0x18),
        set(),
    ),
    # services
    (
        "ADVAPI32.CreateServiceA",
        (
            0x13AC0,
            "Process Helper",
            "Process Helper",
            0xF01FF,
            1,
            3,
            1,
            "C:\\Windows\\System32\\Lab10-03.sys",
            0,
            0,
            0,
            0,
            0,
        ),
        {"arg:svc:driver", "arg:path:system", "arg:ext:sys"},
    ),
    (
        "ADVAPI32.CreateServiceA",
        (
            0x135F0,
            "IPRIP",
            "x",
            0xF01FF,
            0x20,
            2,
            1,
            "%SystemRoot%\\System32\\svchost.exe -k netsvcs",
            0,
            0,
            0,
            0,
            0,
        ),
        {"arg:svc:autostart", "arg:path:system", "arg:ext:exe"},
    ),
    # nothing known
    ("KERNEL32.EnterCriticalSection", (0x495E88,), set()),
    ("KERNEL32.GetTickCount", (), set()),
    ("USER32.CreateWindowExA", (0, "MINIASP", "MiniAsp", 0xCF0000, 0), set()),
    ("com_api.IWbemServices.ExecQuery", (0x7F2070, "WQL", "SELECT * FROM Win32_BaseBoard", 0x30), set()),
    ("com_api.IWbemLocator.ConnectServer", (0x17FC0, "ROOT\\CIMV2", 0, 0), set()),
    (
        "WININET.HttpSendRequestA",
        (0x28, "User-Agent: Mozilla/5.0 (compatible; MSIE 10.0)", 0xFFFFFFFF, 0, 0),
        set(),
    ),
    ("WS2_32.gethostbyname", ("www.office365e.com",), {"arg:net:domain"}),  # .com ends hosts, not programs
]


@pytest.mark.parametrize(
    ("name", "args", "expected"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_calls_are_classed_by_what_their_arguments_say(name: str, args: tuple, expected: set) -> None:
    tokens = argument_tokens(name, args)
    assert set(tokens) == expected
    assert len(tokens) == len(set(tokens)) <= MAX_TOKENS_PER_CALL
    assert set(tokens) <= VOCABULARY


def test_spellings_of_one_api_are_read_alike() -> None:
    """A and W variants, Zw and Nt, any case, with or without the DLL's name."""
    path = ("C:\\Windows\\temp\\a.exe",)
    assert argument_tokens("kernel32.DeleteFileA", path) == argument_tokens("KERNEL32.DELETEFILEW", path)
    protect = (0xFFFFFFFF, 0, 0, 0x40, 0)
    assert argument_tokens("ntdll.ZwProtectVirtualMemory", protect) == argument_tokens(
        "NtProtectVirtualMemory", protect
    )
    assert argument_tokens("ntdll.ZwProtectVirtualMemory", protect) == ("arg:proc:self", "arg:mem:rwx")


def test_a_calls_tokens_come_in_one_order_whatever_the_spelling() -> None:
    """A hive given as a name or as a handle, before or after the key: the same tokens, in the same
    order (the vocabulary's), so a sequence model sees one pattern."""
    key = "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run"
    as_handle = argument_tokens("advapi32.RegOpenKeyExA", (0x80000002, key, 0, 1, 0))
    as_name = argument_tokens("advapi32.RegOpenKeyExA", ("HKEY_LOCAL_MACHINE", key, 0, 1, 0))
    assert as_handle == as_name == ("arg:reg:hklm", "arg:reg:run")


def test_the_vocabulary_is_small_and_bounded() -> None:
    """Whatever the arguments, tokens come from VOCABULARY: random strings and integers, real shapes
    with random parts, and strings far longer than the tracer keeps."""
    assert 60 <= len(VOCABULARY) <= 120
    assert all(t.startswith("arg:") and " " not in t for t in VOCABULARY)
    rng = random.Random(7)
    pieces = [
        "C:\\",
        "\\\\",
        "\\??\\",
        "%temp%\\",
        "HKEY_LOCAL_MACHINE\\",
        "http://",
        ":",
        ".",
        "\\",
        "*",
        "system32",
        "Run",
        ".exe",
        "PAGE_",
        "CALG_",
        "CSIDL_",
        " ",
        '"',
        "/",
        "127.0.0.1",
        "\u4e2d",
    ]
    names = [c[0] for c in CASES] + ["x.Unknown", "", "."]
    seen: set[str] = set()
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        args = (text, rng.choice([0, -1, 0x40, 0x80000002, 2**64 - 1, rng.getrandbits(40)]), text[::-1])
        tokens = argument_tokens(rng.choice(names), args)
        assert set(tokens) <= VOCABULARY and len(tokens) <= MAX_TOKENS_PER_CALL
        seen |= set(tokens)
    assert len(seen) > 20  # the fuzz reaches much of the vocabulary, not one corner of it
    huge = "C:\\Windows\\temp\\" + "a" * 10_000_000 + ".exe"
    # Only the first MAX_STRING characters are read: the extension at the far end is not.
    assert argument_tokens("kernel32.CreateFileA", (huge,)) == argument_tokens(
        "kernel32.CreateFileA", (huge[:MAX_STRING],)
    )


# --- encoding --------------------------------------------------------------------------------------


def _trace() -> Trace:
    trace = synthetic_trace(True, 617, n_visits=120, api_calls=9)
    trace.api_calls += [
        ApiCall(
            5, "kernel32.VirtualAlloc", 1, args=(0, 0x1000, 0x3000, "PAGE_EXECUTE_READWRITE"), result=0x50000
        ),
        ApiCall(
            5, "kernel32.CreateFileA", 2, args=("C:\\Windows\\temp\\x.exe", "GENERIC_WRITE", 0, 0, 2, 0x80, 0)
        ),
        ApiCall(119, "ws2_32.connect", 3, args=(4, "10.1.2.3:443", 0x10), result=0),
    ]
    return trace


def _digest(enc) -> str:
    blob = enc.sequence.tobytes() + "\n".join(enc.lexicon).encode() + repr(enc.block_contents).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# Digests of the sequences of `_trace()` as runtrace encoded them before argument tokens existed
# (main at 1b88a7a): without the option, encoding must not change by one byte.
BEFORE_THE_OPTION = {
    ("ism", True, None): "6962620d5699a700",
    ("ism", True, 50): "5aa66dab952b5e4b",
    ("ism", False, None): "f2064eaf86bb0731",
    ("ism", False, 50): "56f5cbdeef8c8661",
    ("bsm", True, None): "01a4237fe1b2ada7",
    ("bsm", True, 50): "00e5990d59120c3e",
    ("bsm", False, None): "6847e02e38dd729f",
    ("bsm", False, 50): "85c396953d149a49",
}


@pytest.mark.parametrize(("representation", "api", "max_tokens"), list(BEFORE_THE_OPTION))
def test_without_the_option_sequences_are_byte_identical_to_before(representation, api, max_tokens) -> None:
    enc = encode_trace(_trace(), representation, "registers", api=api, max_tokens=max_tokens)
    assert _digest(enc) == BEFORE_THE_OPTION[(representation, api, max_tokens)]
    explicit = encode_trace(
        _trace(), representation, "registers", api=api, api_args=False, max_tokens=max_tokens
    )
    assert _digest(explicit) == _digest(enc)


@pytest.mark.parametrize("representation", ["ism", "bsm"])
def test_with_the_option_each_api_token_is_followed_by_its_argument_classes(representation: str) -> None:
    trace = _trace()
    plain = encode_trace(trace, representation, "registers", api=True)
    enc = encode_trace(trace, representation, "registers", api=True, api_args=True)
    tokens = [enc.lexicon[i] for i in enc.sequence.tolist()]
    plain_tokens = [plain.lexicon[i] for i in plain.sequence.tolist()]
    # Taking the argument tokens out gives the sequence without them.
    assert [t for t in tokens if not t.startswith("arg:")] == plain_tokens
    assert enc.n_api_calls == plain.n_api_calls == 12
    i = tokens.index("api:kernel32.virtualalloc")
    assert tokens[i + 1 : i + 5] == [
        "arg:mem:rwx",
        "api:kernel32.createfilea",
        "arg:path:temp",
        "arg:ext:exe",
    ]
    assert tokens[-3:] == ["api:ws2_32.connect", "arg:net:ip", "arg:port:web"]
    # Every argument token follows an API token or another argument token of the same call.
    for k, token in enumerate(tokens):
        if token.startswith("arg:"):
            assert tokens[k - 1].startswith(("api:", "arg:"))
    if representation == "bsm":  # one pseudo-block per token, like an API call's
        contents = dict(zip(enc.lexicon, enc.block_contents, strict=True))
        assert contents["arg:mem:rwx"] == ("arg:mem:rwx",)
    # Cutting works on the longer sequence as on any other.
    cut = encode_trace(trace, representation, "registers", api=True, api_args=True, max_tokens=37)
    assert len(cut.sequence) == 37 and [cut.lexicon[i] for i in cut.sequence] == tokens[:37]


@pytest.mark.parametrize("representation", ["ism", "bsm"])
@pytest.mark.parametrize("max_tokens", [None, 37, 200])
def test_scan_maps_argument_tokens_back_to_their_call(representation: str, max_tokens) -> None:
    """An explanation names the call an argument token came from (origin -1 - k, as the call's own)."""
    trace = _trace()
    enc = encode_trace(trace, representation, "registers", api=True, api_args=True, max_tokens=max_tokens)
    origin, calls = origins(trace, representation, True, max_tokens, api_args=True)
    assert len(origin) == len(enc.sequence)
    owner = None
    for o, token in zip(origin.tolist(), (enc.lexicon[i] for i in enc.sequence.tolist()), strict=True):
        if token.startswith("api:"):
            assert o < 0 and token == api_token(calls[-1 - o].name)
            owner = o
        elif token.startswith("arg:"):
            assert o == owner and token in argument_tokens(calls[-1 - o].name, calls[-1 - o].args)
        else:
            assert o >= 0


def test_api_items_list_one_entry_per_inserted_token() -> None:
    positions, tokens, owners = api_items(_trace(), 120, api_args=True)
    assert len(positions) == len(tokens) == len(owners)
    assert np.all(np.diff(positions) >= 0) and np.all(np.diff(owners) >= 0)
    assert sum(t.startswith("api:") for t in tokens) == owners[-1] + 1 == 12


# --- datasets --------------------------------------------------------------------------------------


def test_datasets_record_the_option_and_read_old_ones_as_without(tmp_path) -> None:
    traces = [_trace(), synthetic_trace(False, 3)]
    data = build_dataset(traces, [1, 0], representation="bsm", api_args=True)
    assert data.api_args and data.describe()["api_args"] is True
    assert any(t.startswith("arg:") for t in data.lexicon)
    loaded = SequenceDataset.load(data.save(tmp_path / "with"))
    assert loaded.api_args is True
    assert np.array_equal(loaded.tokens, data.tokens)
    # A dataset written before the option has no `api_args` in dataset.json: it was built without.
    plain = build_dataset(traces, [1, 0], representation="bsm").save(tmp_path / "plain")
    header = json.loads((plain / "dataset.json").read_text())
    del header["api_args"]
    (plain / "dataset.json").write_text(json.dumps(header))
    old = SequenceDataset.load(plain)
    assert old.api_args is False and not any(t.startswith("arg:") for t in old.lexicon)
    with pytest.raises(DatasetError, match="need api"):
        build_dataset(traces, [1, 0], api=False, api_args=True)
