"""`RegQueryValueEx[A|W]` answered as Windows answers it, from Speakeasy's registry.

Speakeasy's handler answered only REG_SZ values, as UTF-8 bytes without their terminating NUL, wrote no
type to `lpType`, and for a value the key lacks wrote `*lpcbData` zero bytes and returned success.  Since
revision 22 (`registry.py`) the registry holds REG_SZ values programs read, and a `RegQueryValueExW`
caller that finds no NUL in its buffer keeps doubling the buffer and asking again until the memory cap
ends the run (corpus file 76d3664a…); a caller that finds success for a missing value allocates whatever
`*lpcbData` held.  Here a query gets the type number, the data in the caller's character width with its
NUL, ERROR_MORE_DATA with the size needed when the buffer is short, and ERROR_FILE_NOT_FOUND (nothing
written) for a missing value.

Where values come from, and how their stored form is undone:

- Speakeasy's configuration (`registry.configure`) names types as strings ("REG_SZ", ...), which its
  `RegValue.normalize_value` does not recognise (it compares with the numbers), so the data stays as
  configured: text for the string types, an integer or integer text ("0x10") for REG_DWORD/REG_QWORD,
  base64 text for REG_BINARY (Speakeasy's documented config form; decoded here, or taken as Latin-1 text
  when it is not base64), and for REG_MULTI_SZ either a list of strings or one string whose strings are
  separated by NULs.
- `sysapi.SystemApis.reg_set_value` stores what a program sets with the type's number: text (NUL
  separators for REG_MULTI_SZ, terminating NULs dropped), integers for REG_DWORD/REG_QWORD, and for
  REG_BINARY Latin-1 text that `normalize_value` then base64-encodes from UTF-8, undone here, so a value
  reads back with the type and bytes the program set.  Other types keep their bytes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from speakeasy.const import REG_READ
from speakeasy.winenv import arch as se_arch

STDCALL = se_arch.CALL_CONV_STDCALL
ERROR_SUCCESS, ERROR_FILE_NOT_FOUND, ERROR_INVALID_HANDLE = 0, 2, 6
ERROR_INVALID_PARAMETER, ERROR_MORE_DATA, ERROR_NOACCESS = 87, 234, 998

TYPES = {
    "REG_NONE": 0,
    "REG_SZ": 1,
    "REG_EXPAND_SZ": 2,
    "REG_BINARY": 3,
    "REG_DWORD": 4,
    "REG_DWORD_LITTLE_ENDIAN": 4,
    "REG_DWORD_BIG_ENDIAN": 5,
    "REG_LINK": 6,
    "REG_MULTI_SZ": 7,
    "REG_RESOURCE_LIST": 8,
    "REG_FULL_RESOURCE_DESCRIPTOR": 9,
    "REG_RESOURCE_REQUIREMENTS_LIST": 10,
    "REG_QWORD": 11,
    "REG_QWORD_LITTLE_ENDIAN": 11,
}
TYPE_NAMES = {number: name for name, number in reversed(list(TYPES.items()))}
_STRING_TYPES = (1, 2, 6)
REG_BINARY, REG_DWORD, REG_DWORD_BIG_ENDIAN, REG_MULTI_SZ, REG_QWORD = 3, 4, 5, 7, 11


def type_number(value_type) -> int:
    """A value's type as Windows numbers it (Speakeasy's config names it; sysapi stores the number)."""
    if isinstance(value_type, int):
        return value_type & 0xFFFFFFFF
    text = str(value_type or "").strip().upper()
    if text in TYPES:
        return TYPES[text]
    try:
        return int(text, 0) & 0xFFFFFFFF
    except ValueError:
        return 0  # an unknown name: REG_NONE, its data as bytes


def _as_int(data) -> int:
    if isinstance(data, int):
        return data
    if isinstance(data, bytes | bytearray):
        return int.from_bytes(data[:8], "little")
    try:
        return int(str(data).strip(), 0)
    except ValueError:
        return 0


def _binary(data) -> bytes:
    if isinstance(data, bytes | bytearray):
        # normalize_value's base64 of UTF-8 text; sysapi's text is the set bytes as Latin-1.
        try:
            text = base64.b64decode(bytes(data), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return bytes(data)
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            return text.encode("utf-8")
    if isinstance(data, str):
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error:
            return data.encode("latin-1", "replace")
    if isinstance(data, list):
        return bytes(b & 0xFF for b in data if isinstance(b, int))
    return b""


def value_bytes(value_type, data, wide: bool) -> tuple[int, bytes]:
    """(type number, the bytes RegQueryValueEx returns) for a stored value, strings in the caller's
    width (W: UTF-16-LE; A: the ANSI code page, taken as Latin-1) with their terminating NULs."""
    number = type_number(value_type)

    def encode(text: str) -> bytes:
        return text.encode("utf-16-le" if wide else "latin-1", "replace")

    if number in _STRING_TYPES:
        text = data if isinstance(data, str) else _binary(data).decode("latin-1") if data else ""
        return number, encode(text.rstrip("\0") + "\0")
    if number == REG_MULTI_SZ:
        strings = list(data) if isinstance(data, list | tuple) else str(data or "").split("\0")
        strings = [str(s) for s in strings if s]  # an empty string would end the list early
        return number, encode("".join(s + "\0" for s in strings) + "\0")
    if number == REG_DWORD:
        return number, (_as_int(data) & 0xFFFFFFFF).to_bytes(4, "little")
    if number == REG_DWORD_BIG_ENDIAN:
        return number, (_as_int(data) & 0xFFFFFFFF).to_bytes(4, "big")
    if number == REG_QWORD:
        return number, (_as_int(data) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    if number == REG_BINARY:
        return number, _binary(data)
    if isinstance(data, bytes | bytearray):
        return number, bytes(data)
    if isinstance(data, str):
        return number, data.encode("latin-1", "replace")
    if isinstance(data, int):
        return number, (data & 0xFFFFFFFF).to_bytes(4, "little")
    return number, b""


class RegQuery:
    def __init__(self, se, ptr: int) -> None:
        self.se, self.ptr = se, ptr

    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers that replace Speakeasy's own (modules, name, argc, convention, fn(argv)); advapi32's
        only, as sysapi's other registry handlers (Speakeasy files none of them under kernelbase)."""
        return [
            (("advapi32",), "RegQueryValueExA", 6, STDCALL, lambda a: self.query(a, False)),
            (("advapi32",), "RegQueryValueExW", 6, STDCALL, lambda a: self.query(a, True)),
        ]

    def _key(self, handle: int):
        emu = self.se.emu
        key = emu.reg_get_key(handle)
        if key is None and handle & 0xFFFFFFFF != handle:
            # A predefined HKEY (0x80000001) sign-extended by an amd64 caller.
            key = emu.reg_get_key(handle & 0xFFFFFFFF)
        return key

    def query(self, argv: list, wide: bool) -> int:
        """RegQueryValueEx(hKey, lpValueName, lpReserved, lpType, lpData, lpcbData)."""
        try:
            return self._query(argv, wide)
        except Exception:
            # A pointer the program passed is unreadable or unwritable: an error, as Windows returns,
            # not the success a failing handler would give (a caller would trust a size never written).
            return ERROR_NOACCESS

    def _query(self, argv: list, wide: bool) -> int:
        hkey, name, _reserved, p_type, p_data, p_size = argv[:6]
        emu = self.se.emu
        value_name = emu.read_mem_string(name, 2 if wide else 1) if name else ""
        if name:
            argv[1] = value_name
        key = self._key(hkey)
        if key is None:
            return ERROR_INVALID_HANDLE
        capacity = int.from_bytes(emu.mem_read(p_size, 4), "little") if p_size else 0
        value = key.get_value(value_name)  # NULL or "": the default value, which Speakeasy names so
        found = None
        if value is not None:
            found = value_bytes(value.get_type(), value.get_data(), wide)
        handlers = emu.api.load_api_handler("advapi32")
        handlers.log_registry_access(
            key.get_path(),
            REG_READ,
            value_name=value_name or None,
            size=len(found[1]) if found else capacity,
            buffer=p_data,
        )
        if found is None:
            return ERROR_FILE_NOT_FOUND  # Windows writes nothing for a missing value
        number, data = found
        argv[3] = TYPE_NAMES.get(number, str(number))
        if p_data and not p_size:
            return ERROR_INVALID_PARAMETER
        if p_type:
            emu.mem_write(p_type, number.to_bytes(4, "little"))
        if p_data and len(data) > capacity:
            status = ERROR_MORE_DATA  # the size needed, and no data
        else:
            status = ERROR_SUCCESS
            if p_data and data:
                emu.mem_write(p_data, data)
        if p_size:
            emu.mem_write(p_size, len(data).to_bytes(4, "little"))
        return status
