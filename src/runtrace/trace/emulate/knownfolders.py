"""`SHGetKnownFolderPath`: the path of a known folder, by its FOLDERID.

Speakeasy has `SHGetFolderPath` (CSIDL numbers) but not its successor: the stub returned 0 (S_OK)
without writing the path pointer, so a program went on with whatever its variable held.  Here the
common folders get the paths Speakeasy's `SHGetFolderPath` gives for the same folders (under its user's
profile), in a block the program frees with `CoTaskMemFree`; an unknown FOLDERID fails with
E_INVALIDARG and a NULL path, as Windows does for an unregistered one.
"""

from __future__ import annotations

import uuid

S_OK, E_INVALIDARG = 0, 0x80070057

# FOLDERID -> path, "{user}" for the profile's user name.
_FOLDERS = {
    "3eb685db-65f9-4cf6-a03a-e3ef65729f3d": r"C:\Users\{user}\AppData\Roaming",  # RoamingAppData
    "f1b32785-6fba-4fcf-9d55-7b8e7f157091": r"C:\Users\{user}\AppData\Local",  # LocalAppData
    "a520a1a4-1780-4ff6-bd18-167343c5af16": r"C:\Users\{user}\AppData\LocalLow",  # LocalAppDataLow
    "5e6c858f-0e22-4760-9afe-ea3317b67173": r"C:\Users\{user}",  # Profile
    "b4bfcc3a-db2c-424c-b029-7fe99a87c641": r"C:\Users\{user}\Desktop",  # Desktop
    "fdd39ad0-238f-46af-adb4-6c85480369c7": r"C:\Users\{user}\Documents",  # Documents
    "374de290-123f-4565-9164-39c4925e467b": r"C:\Users\{user}\Downloads",  # Downloads
    "b97d20bb-f46a-4c97-ba10-5e3608430854":
        r"C:\Users\{user}\AppData\Roaming\Microsoft\Windows\Start Menu\Programs\Startup",  # Startup
    "a77f5d77-2e2b-44c3-a6a2-aba601054a51":
        r"C:\Users\{user}\AppData\Roaming\Microsoft\Windows\Start Menu\Programs",  # Programs
    "62ab5d82-fdc1-4dc3-a9dd-070d1d495d97": r"C:\ProgramData",  # ProgramData
    "82a5ea35-d9cd-47c5-9629-e15d2f714e6e":
        r"C:\ProgramData\Microsoft\Windows\Start Menu\Programs\StartUp",  # CommonStartup
    "905e63b6-c1bf-494e-b29c-65b732d3d21a": r"C:\Program Files",  # ProgramFiles
    "7c5a40ef-a0fb-4bfc-874a-c0f2e0b9fa8e": r"C:\Program Files (x86)",  # ProgramFilesX86
    "f38bf404-1d43-42f2-9305-67de0b28fc23": r"C:\Windows",  # Windows
    "1ac14e77-02e7-4e5d-b744-2eb1ae5198b7": r"C:\Windows\system32",  # System
    "d65231b0-b2f1-4857-a4ce-a8e7c6ea7d27": r"C:\Windows\SysWOW64",  # SystemX86
    "352481e8-33be-4251-ba85-6007caedcf9d": r"C:\Users\{user}\AppData\Local\Microsoft\Windows\INetCache",
}  # fmt: skip


def folder_path(guid: bytes, user: str) -> str | None:
    path = _FOLDERS.get(str(uuid.UUID(bytes_le=bytes(guid))))
    return None if path is None else path.replace("{user}", user)


class KnownFolders:
    def __init__(self, se, ptr: int) -> None:
        self.se, self.ptr = se, ptr

    def get_path(self, argv: list) -> int:
        """SHGetKnownFolderPath(rfid, dwFlags, hToken, PWSTR *ppszPath)."""
        rfid, _flags, _token, out = argv[:4]
        emu = self.se.emu
        path = folder_path(emu.mem_read(rfid, 16), emu.get_user()["name"]) if rfid else None
        block = 0
        if path is not None:
            data = (path + "\0").encode("utf-16-le")
            block = self.se.mem_alloc(len(data), tag="api.SHGetKnownFolderPath")
            self.se.mem_write(block, data)
        if out:
            self.se.mem_write(out, block.to_bytes(self.ptr, "little"))
        return S_OK if path is not None else E_INVALIDARG
