"""Security descriptors from SDDL text: `ConvertStringSecurityDescriptorToSecurityDescriptorA/W`
(advapi32), which Speakeasy has no handler for (tracer revision 24).

Malware that creates a mutex, a named pipe or a file every user may open builds its security
attributes from a string such as "D:(A;;GA;;;WD)"; at revision 23, 12 runs that ended with fewer than
1,000 API calls had this call stubbed: FALSE with no descriptor, and the program gave up before its
pipe or mutex existed.

Windows answers with a self-relative descriptor in memory the caller frees with `LocalFree`.  No
emulated API checks access, so the text is not parsed into ACEs: the descriptor is the one of a NULL
DACL (everyone may do anything), what the strings these programs pass grant in effect, and its size.
"""

from __future__ import annotations

from collections.abc import Callable

from speakeasy.winenv import arch as se_arch

from runtrace.trace.emulate.apigroup import ApiGroup

STDCALL = se_arch.CALL_CONV_STDCALL
SDDL_REVISION_1 = 1
ERROR_INVALID_PARAMETER = 87
ERROR_UNKNOWN_REVISION = 1305
SECURITY_DESCRIPTOR_REVISION = 1
SE_DACL_PRESENT, SE_SELF_RELATIVE = 0x0004, 0x8000
# SECURITY_DESCRIPTOR_RELATIVE: Revision, Sbz1, Control, then the owner, group, SACL and DACL offsets
# (0: none; a present DACL at offset 0 is the NULL DACL).
SELF_RELATIVE_NULL_DACL = (
    bytes([SECURITY_DESCRIPTOR_REVISION, 0])
    + (SE_DACL_PRESENT | SE_SELF_RELATIVE).to_bytes(2, "little")
    + bytes(16)
)


class SecurityDescriptors(ApiGroup):
    def simple(self) -> list[tuple[tuple[str, ...], str, int, int, Callable[[list], int]]]:
        """Handlers for APIs Speakeasy has none of."""
        name = "ConvertStringSecurityDescriptorToSecurityDescriptor"
        return [
            (("advapi32",), name + suffix, 4, STDCALL, lambda a, w=wide: self.from_string(a, w))
            for suffix, wide in (("A", False), ("W", True))
        ]

    def from_string(self, argv: list, wide: bool) -> int:
        """(StringSecurityDescriptor, StringSDRevision, *SecurityDescriptor, *SecurityDescriptorSize)."""
        text, revision, out, size_at = argv[:4]
        if not text or not out:
            self.emu.set_last_error(ERROR_INVALID_PARAMETER)
            return 0
        argv[0] = self.emu.read_mem_string(text, 2 if wide else 1, max_chars=4096)
        if revision & 0xFFFFFFFF != SDDL_REVISION_1:
            self.emu.set_last_error(ERROR_UNKNOWN_REVISION)
            return 0
        block = self.se.mem_alloc(len(SELF_RELATIVE_NULL_DACL), tag="api.ConvertStringSecurityDescriptor")
        self.emu.mem_write(block, SELF_RELATIVE_NULL_DACL)
        self.emu.mem_write(out, block.to_bytes(self.ptr, "little"))
        if size_at:
            self.emu.mem_write(size_at, len(SELF_RELATIVE_NULL_DACL).to_bytes(4, "little"))
        return 1
