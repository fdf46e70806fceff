"""What an API call's arguments say, as a few tokens from a small fixed vocabulary.

An API token alone (`api:kernel32.createfilea`) says a file was opened; where the file was and what
kind of file it is says far more: a program that writes an `.exe` into the system directory, creates a
process suspended, protects memory read-write-execute or opens the `...\\CurrentVersion\\Run` key is
doing what droppers, injectors and persistence do.  The raw strings and numbers cannot be tokens
themselves (every path, host and pointer is different), so each argument is *bucketed*: the tokens name
the kind of location, key, host, flag or algorithm, never the value.  The same idea as Nebula's
(Trizna et al., 2023) tokenised Speakeasy reports, kept to a bounded vocabulary (`VOCABULARY`, 84
strings) so that a model's vocabulary and a dataset's lexicon grow by a constant, not by the corpus.

Inputs are what the tracer records (`ApiCall.args`): integers, and strings where Speakeasy's handler
dereferenced a string argument or spelled a flag (`"PAGE_EXECUTE_READWRITE"`, `"CREATE_SUSPENDED"`,
`"10.1.2.3:443"` for a sockaddr).  A handler may leave a flag as an integer, so the flags that matter
(page protection, creation flags, registry hives, ports, CryptoAPI algorithm ids) are read in both
spellings, by argument position for the APIs listed in `_RULES`.  Strings of any API are classed by
shape (a path, a registry key, a URL, a `CSIDL_`/`PAGE_`/`CALG_` constant); only the first
`MAX_STRING` characters are read (the tracer keeps 512), so no expression here ever runs on more text
than that, however long a string an imported trace carries.

Tokens of one call come in the vocabulary's order (one set of arguments, one token sequence, whichever
spelling the handler chose), each at most once, at most `MAX_TOKENS_PER_CALL`.  A call whose arguments
say nothing known gives none.  What the emulator decides is kept out, so that the tokens describe the
program, not the sandbox or the file's kind: the sample runs as `startup.PROGRAM` whatever it is (as
`C:\\Windows\\system32\\<sha256>.exe` before tracer revision 20), so a path to it is `arg:path:self`
alone (no location, no extension); the answers the
emulator writes into a caller's buffer (GetModuleFileName, GetTempPath, ...) and the strings text
helpers (`strcat`, `wsprintf`, ...) only move around give no tokens; text with control characters is
no name.  Where it names itself, the emulated machine (`registry.HOST`; `speakeasy_host` before tracer
revision 22) is `arg:net:localhost`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from runtrace.trace.emulate import registry, startup

MAX_STRING = 512  # characters of a string argument read
MAX_TOKENS_PER_CALL = 8
MAX_WORDS = 16  # words of a command line read

# --- the vocabulary --------------------------------------------------------------------------------

PATH_LOCATIONS = (
    "self",  # the traced file itself: the emulator names it by its sha256
    "startup",  # Start Menu\Programs\Startup
    "temp",
    "drivers",  # system32\drivers
    "system",  # system32, SysWOW64
    "windows",  # the rest of the Windows directory
    "appdata",  # a user's AppData / Application Data
    "programdata",
    "programfiles",
    "profile",  # the rest of a user's profile (Desktop, Documents, Public, ...)
    "share",  # \\host\share
    "device",  # \\.\PhysicalDrive0, \Device\..., \\?\GLOBALROOT
    "pipe",  # \\.\pipe\name
    "other",  # a path elsewhere, or relative
    "wildcard",  # a search pattern (*.*): enumerating files
)
EXTENSIONS = ("exe", "dll", "sys", "script", "lnk")
REGISTRY = (
    "hklm",
    "hkcu",
    "hkcr",
    "hku",
    "run",  # ...\CurrentVersion\Run, RunOnce, RunServices, Policies\Explorer\Run
    "services",  # ...\Services\..., SvcHost, ServiceDll / ImagePath values
    "winlogon",  # Winlogon (Userinit, Shell), AppInit_DLLs
    "ifeo",  # Image File Execution Options, SilentProcessExit
    "policies",
    "security",  # Windows Defender, firewall (SharedAccess), Security Center
    "internet",  # Internet Settings (proxy, zones)
    "shell",  # ...\shell\open\command, shellex handlers
    "crypto",  # ...\Cryptography (MachineGuid)
    "uninstall",
    "other",  # a key in none of the above
)
NETWORK = (
    "localhost",
    "ip",  # a literal address
    "domain",
    "domain-alt",  # a top-level domain outside ICANN's root (.onion, .bit, .bazar, ...)
    "http",
    "https",
    "ftp",
    "tcp",
    "udp",
    "raw",
    "get",
    "post",
)
PORTS = ("web", "mail", "irc", "fileshare", "remote", "dns", "tor", "low", "high")
PROCESS = ("self", "other", "suspended", "hidden", "access-write", "access-read")
COMMANDS = ("shell", "lolbin", "recovery")
MEMORY = ("rwx", "rx", "x", "rw", "r", "noaccess", "guard")
CRYPTO = (
    "hash",
    "encrypt",
    "decrypt",
    "key",
    "random",
    "encoding",
    "alg-hash",
    "alg-symmetric",
    "alg-asymmetric",
)
SERVICES = ("driver", "autostart")

_ORDERED = tuple(
    [f"arg:path:{t}" for t in PATH_LOCATIONS]
    + [f"arg:ext:{t}" for t in EXTENSIONS]
    + [f"arg:reg:{t}" for t in REGISTRY]
    + [f"arg:net:{t}" for t in NETWORK]
    + [f"arg:port:{t}" for t in PORTS]
    + [f"arg:proc:{t}" for t in PROCESS]
    + [f"arg:thread:{t}" for t in ("suspended",)]
    + [f"arg:cmd:{t}" for t in COMMANDS]
    + [f"arg:mem:{t}" for t in MEMORY]
    + [f"arg:crypto:{t}" for t in CRYPTO]
    + [f"arg:svc:{t}" for t in SERVICES]
)
VOCABULARY: frozenset[str] = frozenset(_ORDERED)
_ORDER = {token: k for k, token in enumerate(_ORDERED)}  # a call's tokens come in this order


def argument_tokens(name: str, args: tuple) -> tuple[str, ...]:
    """The argument-class tokens of one call, e.g. `("arg:path:system", "arg:ext:exe")` for
    `kernel32.CopyFileA(..., "C:\\Windows\\system32\\svchost.exe", 0)`; () when nothing is known.

    `name` as recorded (`kernel32.CreateFileA`, any case), `args` as `ApiCall.args`."""
    if not args and _rules_of(name).by_name is None:
        return ()
    return _classify(name, tuple(args))


# --- per-API rules ---------------------------------------------------------------------------------

Rule = Callable[[tuple], Iterable[str]]


class _ApiRules:
    """How to read one API's arguments: positional rules, a replacement for the generic string
    classing (command lines), and tokens that follow from the name alone (crypto operations)."""

    __slots__ = ("positional", "strings", "by_name")

    def __init__(self, positional=(), strings=None, by_name=None) -> None:
        self.positional: tuple[Rule, ...] = tuple(positional)
        self.strings: Callable[[str], Iterable[str]] | None = strings
        self.by_name: tuple[str, ...] | None = by_name


_NO_RULES = _ApiRules()


def _no_tokens(value: str) -> tuple[str, ...]:
    return ()


def _arg(args: tuple, i: int):
    return args[i] if 0 <= i < len(args) else None


def _protection(i: int) -> Rule:
    return lambda args: _protection_tokens(_arg(args, i))


def _process_handle(i: int) -> Rule:
    def rule(args: tuple) -> Iterable[str]:
        value = _arg(args, i)
        if value is None or value == 0:  # not given, or NULL
            return ()
        # -1 is GetCurrentProcess()'s pseudo-handle; Speakeasy writes another process's image path.
        return ("arg:proc:self",) if isinstance(value, int) and _is_minus_one(value) else ("arg:proc:other",)

    return rule


def _creation_flags(i: int, kind: str) -> Rule:
    """CREATE_SUSPENDED (4) and, for processes, CREATE_NO_WINDOW (0x08000000)."""

    def rule(args: tuple) -> Iterable[str]:
        value = _arg(args, i)
        if isinstance(value, int):
            suspended, hidden = bool(value & 0x4), bool(value & 0x08000000)
        elif isinstance(value, str):
            upper = value[:MAX_STRING].upper()
            suspended, hidden = "CREATE_SUSPENDED" in upper, "CREATE_NO_WINDOW" in upper
        else:
            return ()
        out = [f"arg:{kind}:suspended"] if suspended else []
        return out + ["arg:proc:hidden"] if hidden and kind == "proc" else out

    return rule


def _flag_bit(i: int, bit: int, token: str) -> Rule:
    def rule(args: tuple) -> Iterable[str]:
        value = _arg(args, i)
        return (token,) if isinstance(value, int) and value & bit else ()

    return rule


def _hidden_window(i: int) -> Rule:
    """nShowCmd / uCmdShow of 0: SW_HIDE."""
    return lambda args: ("arg:proc:hidden",) if _arg(args, i) in (0, "SW_HIDE") else ()


def _process_access(i: int) -> Rule:
    """OpenProcess: rights to write, operate on memory or create threads (injection) vs query/read."""

    def rule(args: tuple) -> Iterable[str]:
        value = _arg(args, i)
        if not value:
            return ()
        if isinstance(value, int):
            write = bool(value & (0x2 | 0x8 | 0x20 | 0x10000000))  # CREATE_THREAD, VM_OPERATION, VM_WRITE
        elif isinstance(value, str):
            upper = value[:MAX_STRING].upper()
            write = any(w in upper for w in ("VM_WRITE", "VM_OPERATION", "CREATE_THREAD", "ALL_ACCESS"))
        else:
            return ()
        return ("arg:proc:access-write",) if write else ("arg:proc:access-read",)

    return rule


def _hive(i: int) -> Rule:
    return lambda args: _hive_tokens(_arg(args, i))


def _host(i: int) -> Rule:
    def rule(args: tuple) -> Iterable[str]:
        value = _arg(args, i)
        return _host_and_port(value) if isinstance(value, str) else ()

    return rule


def _port(i: int) -> Rule:
    def rule(args: tuple) -> Iterable[str]:
        value = _arg(args, i)
        return (_port_token(value),) if isinstance(value, int) and 0 < value < 65536 else ()

    return rule


def _verb(i: int) -> Rule:
    def rule(args: tuple) -> Iterable[str]:
        value = _arg(args, i)
        if value == 0:  # NULL: GET
            return ("arg:net:get",)
        if isinstance(value, str):
            verb = value.strip().upper()
            return ("arg:net:get",) if verb == "GET" else ("arg:net:post",) if verb == "POST" else ()
        return ()

    return rule


def _socket_type(i: int) -> Rule:
    types = {1: "arg:net:tcp", 2: "arg:net:udp", 3: "arg:net:raw"}
    return lambda args: (types[v],) if (v := _arg(args, i)) in types else ()


def _algorithm_id(i: int, key_pair_ids: bool = False) -> Rule:
    def rule(args: tuple) -> Iterable[str]:
        value = _arg(args, i)
        if isinstance(value, str):
            return _algorithm_name_tokens(value)
        if not isinstance(value, int):
            return ()
        if key_pair_ids and value in (1, 2):  # AT_KEYEXCHANGE, AT_SIGNATURE
            return ("arg:crypto:alg-asymmetric",)
        return _alg_id_tokens(value)

    return rule


def _algorithm_name(i: int) -> Rule:
    def rule(args: tuple) -> Iterable[str]:
        value = _arg(args, i)
        return _algorithm_name_tokens(value) if isinstance(value, str) else ()

    return rule


def _service_kind(type_index: int, start_index: int) -> Rule:
    def rule(args: tuple) -> Iterable[str]:
        kind, start = _arg(args, type_index), _arg(args, start_index)
        out = []
        if isinstance(kind, int) and kind & 0x3:  # SERVICE_KERNEL_DRIVER, SERVICE_FILE_SYSTEM_DRIVER
            out.append("arg:svc:driver")
        if isinstance(start, int) and start in (0, 1, 2):  # boot, system, automatic
            out.append("arg:svc:autostart")
        return out

    return rule


def _registry_string(value: str) -> tuple[str, ...]:
    """A string argument of a registry API: a key (absolute or relative to an open handle), a value
    name that matters, or value data that is a file path (a Run value, a ServiceDll)."""
    low = value[:MAX_STRING].strip().strip('"').strip().lower()
    if not low:
        return ()
    named = _REGISTRY_VALUE_NAMES.get(low)
    if named:
        return (named,)
    if _is_rooted_path(low) or "://" in low:
        return _string_tokens(value)
    return _registry_tokens(low) or (_registry_key_classes(low) if "\\" in low else ())


_REGISTRY_VALUE_NAMES = {
    "servicedll": "arg:reg:services",
    "imagepath": "arg:reg:services",
    "userinit": "arg:reg:winlogon",
    "appinit_dlls": "arg:reg:winlogon",
    "loadappinit_dlls": "arg:reg:winlogon",
}

# Argument positions follow the Windows SDK prototypes.  One entry serves the A and W spellings and
# Zw as Nt (see `_rules_of`).
_RULES: dict[str, _ApiRules] = {}


def _add(names: str, *positional: Rule, strings=None, by_name=None) -> None:
    for n in names.split():
        _RULES[n] = _ApiRules(positional, strings, by_name)


@lru_cache(maxsize=4096)
def _rules_of(name: str) -> _ApiRules:
    """`KERNEL32.CreateProcessW` -> the rules of `createprocess`; `ntdll.ZwOpenKey` -> `ntopenkey`;
    `DNSAPI.DnsQuery_A` -> `dnsquery_`."""
    function = name.rsplit(".", 1)[-1].strip().lower()
    if function.startswith("zw"):
        function = "nt" + function[2:]
    rules = _RULES.get(function)
    if rules is None and function[-1:] in ("a", "w"):
        rules = _RULES.get(function[:-1])
    if rules is None and function.startswith("dnsquery_"):
        rules = _RULES["dnsquery_"]
    if rules is None and _is_text_helper(function):
        return _TEXT_HELPER
    return rules or _NO_RULES


# String and conversion helpers move text around; the path, key or URL they build shows again in the
# call that uses it (CreateFile, RegOpenKey, ...), so here it would only be counted twice.
_TEXT_HELPER = _ApiRules(strings=_no_tokens)
_TEXT_HELPER_PREFIXES = (
    ("str", "wcs", "mbs", "tcs", "lstr", "sysallocstring", "sysfreestring")
    + ("charupper", "charlower", "charnext", "charprev")
    + ("pathfind", "pathremove", "pathadd", "pathappend", "pathcombine", "pathstrip", "pathskip")
)
_TEXT_HELPER_NAMES = frozenset(("multibytetowidechar", "widechartomultibyte", "outputdebugstring"))


def _is_text_helper(function: str) -> bool:
    """C runtime `str*` / `wcs*` / `_mbs*`, `lstr*`, the `*printf` family, text conversions."""
    bare = function.lstrip("_")
    return (
        bare.startswith(_TEXT_HELPER_PREFIXES)
        or "printf" in bare
        or bare.removesuffix("a").removesuffix("w") in _TEXT_HELPER_NAMES
    )


@lru_cache(maxsize=1 << 14)
def _classify(name: str, args: tuple) -> tuple[str, ...]:
    rules = _rules_of(name)
    out: dict[str, None] = dict.fromkeys(rules.by_name or ())  # an ordered set
    strings = rules.strings or _string_tokens
    for value in args:
        if isinstance(value, str):
            out.update(dict.fromkeys(strings(value)))
    for rule in rules.positional:
        out.update(dict.fromkeys(rule(args)))
    return tuple(sorted(out, key=_ORDER.__getitem__))[:MAX_TOKENS_PER_CALL]


# --- strings by shape ------------------------------------------------------------------------------


@lru_cache(maxsize=1 << 14)
def _string_tokens(value: str) -> tuple[str, ...]:
    """Tokens of a string argument of any API, from its shape alone."""
    text = value[:MAX_STRING].strip().strip('"').strip()
    low = text.lower()
    if not low or not low.isprintable():
        # Control characters: a buffer of bytes a handler read as text (a code page table, packed data),
        # not a name; no path, key or host can hold them.
        return ()
    if low.startswith("page_"):
        return _protection_tokens(text)
    if low.startswith("calg_"):
        return _algorithm_name_tokens(low)
    if low.startswith("csidl_"):
        return _csidl_tokens(low)
    if low in _SOCKET_TYPES:
        return (_SOCKET_TYPES[low],)
    if "://" in low:
        return _url_tokens(low)
    registry = _registry_tokens(low)
    if registry:
        return registry
    return _path_tokens(low)


_SOCKET_TYPES = {"sock_stream": "arg:net:tcp", "sock_dgram": "arg:net:udp", "sock_raw": "arg:net:raw"}


# --- paths -----------------------------------------------------------------------------------------

_EXTENSION_CLASS = {
    **dict.fromkeys(("exe", "scr", "pif", "com"), "arg:ext:exe"),
    **dict.fromkeys(("dll", "ocx", "cpl", "drv"), "arg:ext:dll"),
    "sys": "arg:ext:sys",
    **dict.fromkeys(("bat", "cmd", "ps1", "vbs", "vbe", "js", "jse", "wsf", "wsh", "hta"), "arg:ext:script"),
    "lnk": "arg:ext:lnk",
}
# Where a path points, most specific first: (marks at the start of the path, marks anywhere in it),
# matched against "\\" + the path without its drive + "\\", lower case.  Anchoring the Windows and
# profile directories keeps a relative "\Microsoft\Windows\x.dat" (an unexpanded %APPDATA%) out of them.
_LOCATIONS = (
    ("startup", (), ("\\start menu\\programs\\startup\\", "\\startup\\")),
    ("temp", (), ("\\temp\\", "\\tmp\\", "%temp%", "%tmp%")),
    ("drivers", (), ("\\system32\\drivers\\",)),
    ("system", (), ("\\system32\\", "\\syswow64\\", "\\sysnative\\")),
    ("windows", ("\\windows\\", "\\winnt\\", "\\systemroot\\"), ("%windir%", "%systemroot%")),
    (
        "appdata",
        (),
        ("\\appdata\\", "%appdata%", "%localappdata%", "\\application data\\", "\\local settings\\"),
    ),
    ("programdata", ("\\programdata\\",), ("%programdata%", "%allusersprofile%", "\\all users\\")),
    ("programfiles", ("\\program files",), ("%programfiles", "%commonprogramfiles")),
    ("profile", ("\\users\\", "\\documents and settings\\"), ("%userprofile%", "%public%", "%homepath%")),
)
_BACKSLASHES = re.compile(r"\\+")
_HEX_DIGITS = frozenset("0123456789abcdef")


def _is_rooted_path(low: str) -> bool:
    """A drive path (`c:\\...`), a UNC or device path (`\\\\...`), or one under an environment variable."""
    return (len(low) > 2 and low[1] == ":" and low[2] in "\\/" and low[0].isalpha()) or low.startswith(
        ("\\\\", "\\??\\", "%")
    )


def _path_tokens(low: str) -> tuple[str, ...]:
    """A lower-case string that may be a file path -> self, location, wildcard and extension tokens."""
    if len(low) > 2 and low[1] == ":" and low[2] == "/":
        low = low.replace("/", "\\")  # c:/windows/...: forward slashes elsewhere are URLs and MIME types
    if "\\" not in low:
        # A bare file name ("cmd.exe", "/update.exe" of a URL): only its kind.  Not ".com", which ends
        # host names, and not ".dll": a library loaded by name ("KERNEL32.DLL") is what every program does.
        if "*" in low:  # a search pattern ("*.*"), not a query ("SELECT * FROM Win32_BaseBoard")
            return () if any(c.isspace() for c in low) else ("arg:path:wildcard",)
        ext = _extension(low)
        return (ext,) if ext and ext != "arg:ext:dll" and not low.endswith(".com") else ()
    for prefix in ("\\\\?\\", "\\??\\"):
        if low.startswith(prefix):
            low = low[len(prefix) :]
            if low.startswith("unc\\"):
                return _with_file_tokens("arg:path:share", low)
            if low.startswith("globalroot"):
                return ("arg:path:device",)
            break
    if low.startswith("\\\\.\\"):
        return ("arg:path:pipe",) if low.startswith("\\\\.\\pipe\\") else ("arg:path:device",)
    if low.startswith("\\device\\"):
        return ("arg:path:device",)
    if low.startswith("\\\\"):
        return _with_file_tokens("arg:path:share", low)
    if not _is_rooted_path(low) and not _extension(low) and "*" not in low:
        # Text with a backslash is not yet a path: a relative one counts when it names a file of a kind
        # we class ("\Mozilla Firefox\bin\Update.exe", an unexpanded %APPDATA%); mutex names
        # ("Global\x"), "host\user" strings and mojibake do not.
        return ()
    body = low[2:] if len(low) > 1 and low[1] == ":" and low[0].isalpha() else low
    framed = "\\" + _BACKSLASHES.sub(r"\\", body.strip("\\")) + "\\"
    if framed.startswith((_PROGRAM, _PROGRAM[:-1] + " ")):
        return ("arg:path:self",)
    location = next(
        (
            name
            for name, prefixes, anywhere in _LOCATIONS
            if framed.startswith(prefixes) or any(m in framed for m in anywhere)
        ),
        "other",
    )
    return _with_file_tokens(f"arg:path:{location}", framed)


def _with_file_tokens(location: str, path: str) -> tuple[str, ...]:
    last = path.rstrip("\\ ").rsplit("\\", 1)[-1]
    last = last.split(" -", 1)[0].split(" /", 1)[0]  # "svchost.exe -k netsvcs": the file, not its switches
    stem = last.split(".", 1)[0]
    if len(stem) == 64 and set(stem) <= _HEX_DIGITS:
        # The sample itself: where the emulator put it and the extension it gave it are the emulator's
        # choices (a DLL runs as <sha256>.exe too), so neither is a token: they would only restate the
        # file's kind, which the corpus audit keeps from separating the classes.
        return ("arg:path:self",)
    out = [location]
    if "*" in last or "?" in last:
        out.append("arg:path:wildcard")
    ext = _extension(last)
    if ext:
        out.append(ext)
    return tuple(out)


def _extension(name: str) -> str | None:
    name = name.rstrip(" .\"'")
    dot = name.rfind(".")
    if dot < 0 or len(name) - dot > 5:
        return None
    return _EXTENSION_CLASS.get(name[dot + 1 :])


_CSIDL = {
    **dict.fromkeys(("startup", "common_startup", "altstartup", "common_altstartup"), "startup"),
    **dict.fromkeys(("appdata", "local_appdata"), "appdata"),
    "common_appdata": "programdata",
    **dict.fromkeys(("system", "systemx86"), "system"),
    **dict.fromkeys(("windows", "fonts", "resources"), "windows"),
    **dict.fromkeys(("program_files", "program_filesx86", "program_files_common"), "programfiles"),
    **dict.fromkeys(("internet_cache", "cookies", "history"), "appdata"),
}


def _csidl_tokens(low: str) -> tuple[str, ...]:
    """`CSIDL_APPDATA` (SHGetFolderPath, SHGetSpecialFolderPath) -> the location it names."""
    folder = low[len("csidl_") :].split("|", 1)[0].strip()
    return (f"arg:path:{_CSIDL.get(folder, 'profile')}",)


# --- registry --------------------------------------------------------------------------------------

_HIVE_NAMES = (
    (("hkey_local_machine", "hklm", "\\registry\\machine", "hkey_current_config"), "arg:reg:hklm"),
    (("hkey_current_user", "hkcu"), "arg:reg:hkcu"),
    (("hkey_classes_root", "hkcr"), "arg:reg:hkcr"),
    (("hkey_users", "hku", "\\registry\\user"), "arg:reg:hku"),
)
_HIVE_HANDLES = {0x80000000: "arg:reg:hkcr", 0x80000001: "arg:reg:hkcu", 0x80000002: "arg:reg:hklm",
                 0x80000003: "arg:reg:hku", 0x80000005: "arg:reg:hklm"}  # fmt: skip
_KEY_CLASSES = (
    ("run", ("\\currentversion\\run", "\\explorer\\run\\")),
    ("winlogon", ("\\winlogon\\", "appinit_dlls")),
    ("services", ("\\services\\", "\\svchost\\")),
    ("ifeo", ("\\image file execution options\\", "\\silentprocessexit\\")),
    ("policies", ("\\policies\\",)),
    ("security", ("\\windows defender\\", "\\sharedaccess\\", "\\security center\\")),
    ("internet", ("\\internet settings\\",)),
    ("shell", ("\\shell\\open\\command\\", "\\shellex\\")),
    ("crypto", ("\\cryptography\\",)),
    ("uninstall", ("\\uninstall\\",)),
)
_KEY_ROOTS = ("software\\", "system\\currentcontrolset", "system\\controlset")


def _registry_tokens(low: str) -> tuple[str, ...]:
    """A string that names a registry key by itself (from a hive, or under SOFTWARE / SYSTEM), or ()."""
    hive = next(
        (token for names, token in _HIVE_NAMES if any(low == n or low.startswith(n + "\\") for n in names)),
        None,
    )
    if hive is None:
        return _registry_key_classes(low) if low.lstrip("\\").startswith(_KEY_ROOTS) else ()
    return (hive,) if "\\" not in low.rstrip("\\") else (hive, *_registry_key_classes(low))


def _registry_key_classes(low: str) -> tuple[str, ...]:
    """The classes of a key path (several where they overlap: Policies\\Explorer\\Run), else other."""
    framed = "\\" + _BACKSLASHES.sub(r"\\", low.strip("\\")) + "\\"
    found = tuple(f"arg:reg:{name}" for name, marks in _KEY_CLASSES if any(m in framed for m in marks))
    return found or ("arg:reg:other",)


def _hive_tokens(value) -> tuple[str, ...]:
    if isinstance(value, int):
        token = _HIVE_HANDLES.get(value & 0xFFFFFFFF) if value >> 32 in (0, 0xFFFFFFFF) else None
        return (token,) if token else ()
    return ()


# --- network ---------------------------------------------------------------------------------------

_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
# The traced program's own path, framed as `_path_tokens` frames paths (its switches may follow it).
_PROGRAM = "\\" + startup.PROGRAM.lower()[3:] + "\\"
_LOCAL_HOSTS = frozenset(("localhost", registry.HOST.lower(), "speakeasy_host", "0.0.0.0", "::1", "::"))
# Top-level domains outside ICANN's root that malware uses to resist takedown (Tor, Namecoin, EmerCoin,
# OpenNIC).
_ALT_TLDS = frozenset(("onion", "bit", "bazar", "coin", "emc", "lib", "i2p", "libre", "oss", "parody"))
_PORTS = {
    **dict.fromkeys((80, 443, 8080, 8443, 8000, 8888), "web"),
    **dict.fromkeys((25, 465, 587, 110, 995, 143, 993), "mail"),
    **dict.fromkeys((6660, 6661, 6662, 6663, 6664, 6665, 6666, 6667, 6668, 6669, 6697), "irc"),
    **dict.fromkeys((20, 21, 139, 445), "fileshare"),
    **dict.fromkeys((22, 23, 3389, 5900, 5938, 5985, 5986), "remote"),
    53: "dns",
    **dict.fromkeys((9001, 9030, 9050, 9051, 9150), "tor"),
}


def _port_token(port: int) -> str:
    return f"arg:port:{_PORTS.get(port) or ('low' if port < 1024 else 'high')}"


def _host_kind(host: str) -> str | None:
    host = host.strip().strip("[]").rstrip(".").lower()
    if not host or len(host) > 253:
        return None
    if host in _LOCAL_HOSTS or host.startswith("127."):
        return "arg:net:localhost"
    if _IPV4.fullmatch(host) or (":" in host and set(host) <= _HEX_DIGITS | {":", "."}):
        return "arg:net:ip"
    if "." in host and all(c.isalnum() or c in "-_." for c in host):
        return "arg:net:domain-alt" if host.rsplit(".", 1)[-1] in _ALT_TLDS else "arg:net:domain"
    return None


def _host_and_port(value: str) -> tuple[str, ...]:
    """`"10.1.2.3:443"`, `"evil.example"`, `"[::1]:80"` -> host kind and port class."""
    text = value[:MAX_STRING].strip()
    if "://" in text:
        return _url_tokens(text.lower())
    host, port = text, None
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and len(tail) <= 5 and (head.count(":") == 0 or head.endswith("]")):
        host, port = head, int(tail)
    out = [kind] if (kind := _host_kind(host)) else []
    if port is not None and 0 < port < 65536:
        out.append(_port_token(port))
    return tuple(out)


def _url_tokens(low: str) -> tuple[str, ...]:
    """A string containing a URL: its scheme, its host's kind, its port's class, what it fetches."""
    at = low.find("://")
    begin = at
    while begin > max(0, at - 5) and low[begin - 1].isalpha():
        begin -= 1
    scheme = low[begin:at]
    out = [f"arg:net:{scheme}"] if scheme in ("http", "https", "ftp") else []
    rest = low[at + 3 :]
    end = next((i for i, c in enumerate(rest) if c in "/?#\"' \\"), len(rest))
    authority, path = rest[:end].rsplit("@", 1)[-1], rest[end:]
    out += _host_and_port(authority)
    ext = _extension(path.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]) if path else None
    if ext:
        out.append(ext)
    return tuple(out)


# --- processes -------------------------------------------------------------------------------------

_SHELLS = frozenset(("cmd", "powershell", "pwsh", "wscript", "cscript", "mshta", "bash", "wsl"))
# Windows' own programs that run, install, schedule or change things for another program ("living off
# the land"): rundll32 loads a DLL, regsvr32 / msiexec install, schtasks / sc / reg persist, ...
_LOLBINS = frozenset(
    ("rundll32", "regsvr32", "msiexec", "schtasks", "sc", "reg", "wmic", "netsh", "bitsadmin", "certutil")
    + ("installutil", "regasm", "regsvcs", "msbuild", "at", "attrib", "icacls", "cacls", "takeown")
    + ("taskkill", "net", "net1", "sdbinst", "odbcconf", "forfiles")
)
_RECOVERY = ("vssadmin", "bcdedit", "wbadmin", "wevtutil", "shadowcopy", "recoveryenabled")


def _command_tokens(value: str) -> tuple[str, ...]:
    """A command line or image path of a process-creation API: the program run, where it lives, and
    whether it touches system recovery (shadow copies, boot configuration, event logs)."""
    low = value[:MAX_STRING].strip().lower()
    if not low:
        return ()
    out: list[str] = []
    words = _words(low)
    if words:
        program = words[0].replace("/", "\\").rsplit("\\", 1)[-1].removesuffix(".exe")
        if program in _SHELLS:
            out.append("arg:cmd:shell")
        elif program in _LOLBINS:
            out.append("arg:cmd:lolbin")
    if any(word in low for word in _RECOVERY):
        out.append("arg:cmd:recovery")
    for k, word in enumerate(words):
        if "://" in word:
            out += _url_tokens(word)
        elif "\\" in word or (k == 0 and not word.startswith(("/", "-"))):
            out += _path_tokens(word)  # the program, and the files it is given; not /switches
    return tuple(out)


def _words(low: str) -> list[str]:
    """The first MAX_WORDS words of a command line, a quoted one kept whole."""
    words, i = [], 0
    while i < len(low) and len(words) < MAX_WORDS:
        if low[i].isspace():
            i += 1
            continue
        if low[i] == '"':
            end = low.find('"', i + 1)
            end = len(low) if end < 0 else end
            words.append(low[i + 1 : end])
            i = end + 1
        else:
            end = i
            while end < len(low) and not low[end].isspace():
                end += 1
            words.append(low[i:end])
            i = end
    return words


def _is_minus_one(value: int) -> bool:
    return value in (-1, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)


# --- memory protection -----------------------------------------------------------------------------

_PROTECTION_BITS = {0x01: "noaccess", 0x02: "r", 0x04: "rw", 0x08: "rw", 0x10: "x", 0x20: "rx",
                    0x40: "rwx", 0x80: "rwx"}  # fmt: skip
_PROTECTION_NAMES = {
    "page_noaccess": "noaccess",
    "page_readonly": "r",
    "page_readwrite": "rw",
    "page_writecopy": "rw",
    "page_execute": "x",
    "page_execute_read": "rx",
    "page_execute_readwrite": "rwx",
    "page_execute_writecopy": "rwx",
}


def _protection_tokens(value) -> tuple[str, ...]:
    """A PAGE_* value (integer or Speakeasy's spelling, `"PAGE_EXECUTE_READ | PAGE_GUARD"`)."""
    if isinstance(value, int):
        if value < 0 or value > 0xFFFF:
            return ()
        access = _PROTECTION_BITS.get(value & 0xFF)
        guard = bool(value & 0x100)
    elif isinstance(value, str):
        flags = [f.strip() for f in value[:MAX_STRING].lower().split("|")]
        access = next((_PROTECTION_NAMES[f] for f in flags if f in _PROTECTION_NAMES), None)
        guard = "page_guard" in flags
    else:
        return ()
    out = [f"arg:mem:{access}"] if access else []
    return tuple(out + ["arg:mem:guard"] if guard else out)


# --- crypto ----------------------------------------------------------------------------------------


def _alg_id_tokens(alg: int) -> tuple[str, ...]:
    """A CryptoAPI ALG_ID, by its class bits (13-15): hash, data encryption, signature / key exchange."""
    if not 0 < alg < 0x10000:
        return ()
    cls = (alg >> 13) & 0x7
    token = {4: "alg-hash", 3: "alg-symmetric", 1: "alg-asymmetric", 5: "alg-asymmetric"}.get(cls)
    return (f"arg:crypto:{token}",) if token else ()


def _algorithm_name_tokens(value: str) -> tuple[str, ...]:
    """`CALG_AES_256`, BCrypt's `"SHA256"` / `"AES"` / `"RNG"`, a CSP's name -> the algorithm's class."""
    low = value[:MAX_STRING].strip().lower().removeprefix("calg_").removeprefix("bcrypt_")
    if low.startswith(("md2", "md4", "md5", "sha", "hmac", "mac")):
        return ("arg:crypto:alg-hash",)
    if low.startswith(("aes", "rc2", "rc4", "rc5", "des", "3des", "chacha", "salsa")):
        return ("arg:crypto:alg-symmetric",)
    if low.startswith(("rsa", "dh", "dsa", "dss", "ecdh", "ecdsa", "ecc")):
        return ("arg:crypto:alg-asymmetric",)
    if low.startswith(("rng", "fips186")):
        return ("arg:crypto:random",)
    # A provider's display name ("Microsoft Enhanced RSA and AES Cryptographic Provider") says what it
    # can do, not what is used: no token.
    return ()


# --- the table ---------------------------------------------------------------------------------------

# memory
_add("virtualalloc", _protection(3))
_add("virtualallocex virtualallocexnuma virtualalloc2", _process_handle(0), _protection(4))
_add("virtualprotect", _protection(2))
_add("virtualprotectex", _process_handle(0), _protection(3))
_add("ntallocatevirtualmemory", _process_handle(0), _protection(5))
_add("ntprotectvirtualmemory", _process_handle(0), _protection(3))
_add("ntcreatesection", _protection(4))
_add("ntmapviewofsection", _process_handle(1), _protection(9))
_add("createfilemapping", _protection(2))
_add("heapcreate", _flag_bit(0, 0x40000, "arg:mem:rwx"))  # HEAP_CREATE_ENABLE_EXECUTE
# another process's memory and threads (or the program's own, through the -1 pseudo-handle)
_add("writeprocessmemory readprocessmemory virtualfreeex", _process_handle(0))
_add("ntwritevirtualmemory ntreadvirtualmemory ntfreevirtualmemory", _process_handle(0))
_add("ntunmapviewofsection terminateprocess ntterminateprocess", _process_handle(0))
_add("ntqueryinformationprocess ntsetinformationprocess", _process_handle(0))
_add("createremotethread createremotethreadex", _process_handle(0), _creation_flags(5, "thread"))
_add("ntcreatethreadex", _process_handle(3), _flag_bit(6, 0x1, "arg:thread:suspended"))
_add("rtlcreateuserthread", _process_handle(0), _flag_bit(2, 0x1, "arg:thread:suspended"))
_add("createthread _beginthreadex", _creation_flags(4, "thread"))
_add("openprocess", _process_access(0))
# process creation: command lines are read as words, not as one path
_add("createprocess", _creation_flags(5, "proc"), strings=_command_tokens)
_add("createprocessasuser createprocessinternal createprocesswithlogon", _creation_flags(6, "proc"),
     strings=_command_tokens)  # fmt: skip
_add("createprocesswithtoken", _creation_flags(4, "proc"), strings=_command_tokens)
_add("winexec", _hidden_window(1), strings=_command_tokens)
_add("shellexecute", _hidden_window(5), strings=_command_tokens)
_add("shellexecuteex ntcreateuserprocess rtlcreateuserprocess", strings=_command_tokens)
# registry
_add(
    "regopenkey regopenkeyex regcreatekey regcreatekeyex regsetvalue regsetvalueex regsetkeyvalue "
    "regqueryvalue regqueryvalueex regdeletekey regdeletekeyex regdeletevalue regdeletetree regenumkey "
    "regenumkeyex regenumvalue regqueryinfokey reggetvalue regloadkey regsavekey shsetvalue shgetvalue "
    "shdeletekey shdeletevalue shregsetvalue shreggetvalue",
    _hive(0),
    strings=_registry_string,
)
_add("ntopenkey ntopenkeyex ntcreatekey ntsetvaluekey ntqueryvaluekey ntdeletekey ntdeletevaluekey",
     strings=_registry_string)  # fmt: skip
# network: host arguments are hosts (a backslash in one is junk, not a share), read by `_host`
_hosts = dict(strings=_no_tokens)
_add("gethostbyname getaddrinfo getaddrinfoex inet_addr dnsquery_", _host(0), **_hosts)  # DnsQuery_A / _W
_add("inet_pton", _host(1), **_hosts)
_add("connect wsaconnect bind", _host(1), **_hosts)
_add("sendto", _host(4), **_hosts)
_add("internetconnect winhttpconnect", _host(1), _port(2), **_hosts)
_add("htons", _port(0))
_add("httpopenrequest winhttpopenrequest", _verb(1))
_add("socket wsasocket", _socket_type(1))
# crypto: the operation follows from the name, the algorithm from the arguments
_add("cryptcreatehash", _algorithm_id(1), by_name=("arg:crypto:hash",))
_add("crypthashdata cryptgethashparam cryptdestroyhash cryptsignhash", by_name=("arg:crypto:hash",))
_add("bcryptcreatehash bcrypthashdata bcryptfinishhash bcrypthash", by_name=("arg:crypto:hash",))
_add("cryptencrypt bcryptencrypt ncryptencrypt cryptprotectdata", by_name=("arg:crypto:encrypt",))
_add("cryptdecrypt bcryptdecrypt ncryptdecrypt cryptunprotectdata", by_name=("arg:crypto:decrypt",))
_add("cryptgenkey", _algorithm_id(1, key_pair_ids=True), by_name=("arg:crypto:key",))
_add("cryptderivekey", _algorithm_id(1), by_name=("arg:crypto:key",))
_add("cryptimportkey cryptexportkey bcryptgeneratesymmetrickey bcryptimportkey", by_name=("arg:crypto:key",))
_add("bcryptgeneratekeypair bcryptimportkeypair ncryptimportkey", by_name=("arg:crypto:key",))
_add("cryptgenrandom bcryptgenrandom systemfunction036 rtlgenrandom", by_name=("arg:crypto:random",))
_add("cryptstringtobinary cryptbinarytostring", by_name=("arg:crypto:encoding",))
_add("bcryptopenalgorithmprovider", _algorithm_name(1))
# services
_add("createservice", _service_kind(4, 5))
# Questions whose string is the emulator's answer written into the caller's buffer (the process image,
# the system and temp directories, the user's name): the API's name says what was asked, the answer is
# the same for every program (or restates the file's kind: a DLL's host process is svchost.exe).
_add(
    "getmodulefilename getmodulefilenameex k32getmodulefilenameex getmodulebasename k32getmodulebasename "
    "getprocessimagefilename k32getprocessimagefilename queryfullprocessimagename getsystemdirectory "
    "getwindowsdirectory getsystemwindowsdirectory getsystemwow64directory gettemppath gettemppath2 "
    "getcurrentdirectory getusername getcomputername getcomputernameex getuserprofiledirectory "
    "getshortpathname getlongpathname getfullpathname getenvironmentvariable expandenvironmentstrings",
    strings=_no_tokens,
)
