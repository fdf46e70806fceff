"""`VerSetConditionMask` and `VerifyVersionInfoA/W` as Windows answers them (tracer revision 24).

Speakeasy declares both cdecl; they are stdcall, and on x86 each takes 16 bytes of arguments (a 64-bit
condition mask among them).  Its return popped none, so the C runtime's version check (`IsWindows...
OrGreater`, VC++ 2012 and later) returned with the stack 32 bytes off and its security-cookie check
ended the run with `__fastfail` (a backdoor DLL of the corpus, among others).  It also answered 0 for
every condition mask and TRUE for every question.

Here the mask is built as Windows builds it (three bits per condition, at the type bit's index) and
the answer compares the caller's structure with the version `GetVersionEx` reports (Speakeasy's
configured one), with no service pack, as a workstation with the single-user terminal-services suite:
major, minor and service-pack numbers hierarchically under the most significant one's condition, as
Windows does; the build, platform, product type and suite on their own.
"""

from __future__ import annotations

from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate.apigroup import ApiGroup

STDCALL = se_arch.CALL_CONV_STDCALL
VER_MINORVERSION, VER_MAJORVERSION, VER_BUILDNUMBER, VER_PLATFORMID = 0x1, 0x2, 0x4, 0x8
VER_SERVICEPACKMINOR, VER_SERVICEPACKMAJOR, VER_SUITENAME, VER_PRODUCT_TYPE = 0x10, 0x20, 0x40, 0x80
VER_EQUAL, VER_GREATER, VER_GREATER_EQUAL, VER_LESS, VER_LESS_EQUAL, VER_AND, VER_OR = range(1, 8)
VER_PLATFORM_WIN32_NT, VER_NT_WORKSTATION, VER_SUITE_SINGLEUSERTS = 2, 1, 0x100
ERROR_BAD_ARGUMENTS, ERROR_OLD_WIN_VERSION = 160, 1150
_HIERARCHY = (VER_MAJORVERSION, VER_MINORVERSION, VER_SERVICEPACKMAJOR, VER_SERVICEPACKMINOR)


def set_condition(mask: int, type_mask: int, condition: int) -> int:
    """VerSetConditionMask: `condition` (3 bits) set for every type bit of `type_mask`."""
    condition &= 0x7
    for index in range(8):
        if type_mask & (1 << index):
            mask = (mask & ~(0x7 << (3 * index))) | (condition << (3 * index))
    return mask & 0xFFFFFFFFFFFFFFFF


def _condition(mask: int, type_bit: int) -> int:
    return (mask >> (3 * (type_bit.bit_length() - 1))) & 0x7


def _compare(system, wanted, condition: int) -> bool:
    return {
        VER_EQUAL: system == wanted,
        VER_GREATER: system > wanted,
        VER_GREATER_EQUAL: system >= wanted,
        VER_LESS: system < wanted,
        VER_LESS_EQUAL: system <= wanted,
    }.get(condition, False)


def verify(system: dict[int, int], wanted: dict[int, int], type_mask: int, mask: int) -> bool | None:
    """Whether the system's fields meet the wanted ones under the mask's conditions; None for a
    question Windows refuses (no type, or a type with no condition)."""
    if not type_mask or any(type_mask & bit and not _condition(mask, bit) for bit in system):
        return None
    tested = [bit for bit in _HIERARCHY if type_mask & bit]
    if tested:
        condition = _condition(mask, tested[0])
        if not _compare([system[b] for b in tested], [wanted[b] for b in tested], condition):
            return False
    for bit in (VER_BUILDNUMBER, VER_PLATFORMID, VER_PRODUCT_TYPE):
        if type_mask & bit and not _compare(system[bit], wanted[bit], _condition(mask, bit)):
            return False
    if type_mask & VER_SUITENAME:
        suites, condition = wanted[VER_SUITENAME], _condition(mask, VER_SUITENAME)
        held = system[VER_SUITENAME] & suites
        if not (held == suites if condition == VER_AND else held != 0):
            return False
    return True


class VersionInfo(ApiGroup):
    def overriding(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers that replace Speakeasy's (modules, name, argc, convention, fn(argv)); on x86 the
        64-bit mask is two of the arguments."""
        k32 = ("kernel32", "kernelbase")
        split = 1 if self.ptr == 4 else 0
        out = [(k32, "VerSetConditionMask", 3 + split, STDCALL, self.set_condition_mask)]
        for suffix, wide in (("A", False), ("W", True)):
            out.append(
                (k32, "VerifyVersionInfo" + suffix, 3 + split, STDCALL, lambda a, w=wide: self.verify(a, w))
            )
        return out

    def _mask(self, low: int, high: int | None) -> int:
        return low if high is None else (low & 0xFFFFFFFF) | ((high & 0xFFFFFFFF) << 32)

    def set_condition_mask(self, argv: list) -> int:
        """(mask, type mask, condition); x86 returns the mask's low half in eax, which holds every
        condition (they reach bit 23)."""
        if self.ptr == 4:
            mask, type_mask, condition = self._mask(argv[0], argv[1]), argv[2] & 0xFFFFFFFF, argv[3]
        else:
            mask, type_mask, condition = argv[0], argv[1] & 0xFFFFFFFF, argv[2]
        value = set_condition(mask, type_mask, condition)
        return value & 0xFFFFFFFF if self.ptr == 4 else value

    def system(self) -> dict[int, int]:
        version = self.emu.get_os_version()
        return {
            VER_MAJORVERSION: version["major"], VER_MINORVERSION: version["minor"],
            VER_SERVICEPACKMAJOR: 0, VER_SERVICEPACKMINOR: 0, VER_BUILDNUMBER: version["build"],
            VER_PLATFORMID: VER_PLATFORM_WIN32_NT, VER_PRODUCT_TYPE: VER_NT_WORKSTATION,
            VER_SUITENAME: VER_SUITE_SINGLEUSERTS,
        }  # fmt: skip

    def verify(self, argv: list, wide: bool) -> int:
        """VerifyVersionInfo(OSVERSIONINFOEX *, type mask, condition mask)."""
        info, type_mask = argv[0], argv[1] & 0xFFFFFFFF
        mask = self._mask(argv[2], argv[3]) if self.ptr == 4 else argv[2]
        if not info:
            self.emu.set_last_error(ERROR_BAD_ARGUMENTS)
            return 0
        words = bytes(self.emu.mem_read(info + 4, 16))
        tail = bytes(self.emu.mem_read(info + (276 if wide else 148), 7))  # after szCSDVersion
        wanted = {
            VER_MAJORVERSION: int.from_bytes(words[0:4], "little"),
            VER_MINORVERSION: int.from_bytes(words[4:8], "little"),
            VER_BUILDNUMBER: int.from_bytes(words[8:12], "little"),
            VER_PLATFORMID: int.from_bytes(words[12:16], "little"),
            VER_SERVICEPACKMAJOR: int.from_bytes(tail[0:2], "little"),
            VER_SERVICEPACKMINOR: int.from_bytes(tail[2:4], "little"),
            VER_SUITENAME: int.from_bytes(tail[4:6], "little"),
            VER_PRODUCT_TYPE: tail[6],
        }
        answer = verify(self.system(), wanted, type_mask, mask)
        if answer is None:
            self.emu.set_last_error(ERROR_BAD_ARGUMENTS)
            return 0
        if not answer:
            self.emu.set_last_error(ERROR_OLD_WIN_VERSION)
            return 0
        return 1
