"""Registry keys every Windows 10 machine has, and the user and machine names, for Speakeasy's config.

Speakeasy's registry holds three example keys (and their parents): opening any other key failed.  Over
the era corpus at tracer revision 21, malicious runs that ended with fewer than 1,000 API calls failed to
open `...\\Internet Settings` (26 runs; 1 benign), the user's `Shell Folders` (14), `Control
Panel\\Mouse` (13), the machine's `Cryptography` key (8, its `MachineGuid` an identifier bots report)
and the `Svchost` service groups (6): keys a real machine never lacks, whose absence sends a program
down its "something is wrong" path.  Here they exist, with the string values programs read from them
(`regquery.py` answers `RegQueryValueEx` for them as Windows does; a value not listed is not found).

Speakeasy names its user `speakeasy_user` on `speakeasy_host`, names a sandbox check can look for, while
the traced program lies in `C:\\Users\\user` (`startup.PROGRAM`); here both are a plain Windows 10
user's.  Each is fixed: every trace sees the same machine.
"""

from __future__ import annotations

USER = "user"
HOST = "DESKTOP-7K4Q2M9"
DOMAIN = "WORKGROUP"
PROFILE = f"C:\\Users\\{USER}"
MACHINE_GUID = "6f1d2c3a-8b4e-4f7a-9c2d-1e5b7a9f0c3d"  # fixed: the same machine for every trace

_EXPLORER = "Software\\Microsoft\\Windows\\CurrentVersion\\Explorer"
_ROAMING = f"{PROFILE}\\AppData\\Roaming"
_SHELL_FOLDERS = {
    "AppData": _ROAMING,
    "Local AppData": f"{PROFILE}\\AppData\\Local",
    "Desktop": f"{PROFILE}\\Desktop",
    "Personal": f"{PROFILE}\\Documents",
    "My Pictures": f"{PROFILE}\\Pictures",
    "My Music": f"{PROFILE}\\Music",
    "Favorites": f"{PROFILE}\\Favorites",
    "Start Menu": f"{_ROAMING}\\Microsoft\\Windows\\Start Menu",
    "Programs": f"{_ROAMING}\\Microsoft\\Windows\\Start Menu\\Programs",
    "Startup": f"{_ROAMING}\\Microsoft\\Windows\\Start Menu\\Programs\\Startup",
    "Recent": f"{_ROAMING}\\Microsoft\\Windows\\Recent",
    "SendTo": f"{_ROAMING}\\Microsoft\\Windows\\SendTo",
    "Templates": f"{_ROAMING}\\Microsoft\\Windows\\Templates",
    "Cache": f"{PROFILE}\\AppData\\Local\\Microsoft\\Windows\\INetCache",
    "Cookies": f"{PROFILE}\\AppData\\Local\\Microsoft\\Windows\\INetCookies",
    "History": f"{PROFILE}\\AppData\\Local\\Microsoft\\Windows\\History",
    "Fonts": "C:\\Windows\\Fonts",
}
_COMMON_FOLDERS = {
    "Common AppData": "C:\\ProgramData",
    "Common Desktop": "C:\\Users\\Public\\Desktop",
    "Common Documents": "C:\\Users\\Public\\Documents",
    "Common Programs": "C:\\ProgramData\\Microsoft\\Windows\\Start Menu\\Programs",
    "Common Startup": "C:\\ProgramData\\Microsoft\\Windows\\Start Menu\\Programs\\Startup",
}
_NT = "HKEY_LOCAL_MACHINE\\Software\\Microsoft\\Windows NT\\CurrentVersion"

# path -> {value name: REG_SZ data}
KEYS: dict[str, dict[str, str]] = {
    f"HKEY_CURRENT_USER\\{_EXPLORER}\\Shell Folders": _SHELL_FOLDERS,
    f"HKEY_CURRENT_USER\\{_EXPLORER}\\User Shell Folders": _SHELL_FOLDERS,
    f"HKEY_LOCAL_MACHINE\\{_EXPLORER}\\Shell Folders": _COMMON_FOLDERS,
    f"HKEY_LOCAL_MACHINE\\{_EXPLORER}\\User Shell Folders": _COMMON_FOLDERS,
    "HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings": {},
    "HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run": {},
    "HKEY_LOCAL_MACHINE\\Software\\Microsoft\\Windows\\CurrentVersion\\Run": {},
    "HKEY_CURRENT_USER\\Software\\Microsoft\\Windows NT\\CurrentVersion\\Windows": {},
    "HKEY_CURRENT_USER\\Control Panel\\Mouse": {"MouseSpeed": "1", "DoubleClickSpeed": "500"},
    "HKEY_CURRENT_USER\\Control Panel\\Desktop": {"Wallpaper": ""},
    "HKEY_CURRENT_USER\\Environment": {"TEMP": f"{PROFILE}\\AppData\\Local\\Temp"},
    "HKEY_LOCAL_MACHINE\\Software\\Microsoft\\Cryptography": {"MachineGuid": MACHINE_GUID},
    "HKEY_LOCAL_MACHINE\\Software\\Microsoft\\Windows\\CurrentVersion": {
        "ProgramFilesDir": "C:\\Program Files",
        "CommonFilesDir": "C:\\Program Files\\Common Files",
    },
    _NT: {
        "ProductName": "Windows 10 Pro",
        "EditionID": "Professional",
        "CurrentVersion": "6.3",
        "CurrentBuild": "19045",
        "CurrentBuildNumber": "19045",  # sysapi.NT_BUILD: the build the emulated system reports
        "DisplayVersion": "22H2",
        "ReleaseId": "2009",
        "InstallationType": "Client",
        "SystemRoot": "C:\\Windows",
        "RegisteredOwner": USER,
    },
    f"{_NT}\\Svchost": {},
    f"{_NT}\\Windows": {"AppInit_DLLs": ""},
    f"{_NT}\\FontSubstitutes": {"MS Shell Dlg": "Microsoft Sans Serif", "MS Shell Dlg 2": "Tahoma"},
    f"{_NT}\\Winlogon": {"Shell": "explorer.exe", "Userinit": "C:\\Windows\\system32\\userinit.exe,"},
}


def configure(config: dict) -> None:
    """Add the keys to a Speakeasy configuration's registry and set its user and machine names."""
    keys = config.setdefault("registry", {}).setdefault("keys", [])
    for path, values in KEYS.items():
        keys.append(
            {"path": path, "values": [{"name": n, "type": "REG_SZ", "data": d} for n, d in values.items()]}
        )
    config["user"] = {**config.get("user", {}), "name": USER}
    config["hostname"], config["domain"] = HOST, DOMAIN
    env = config.setdefault("env", {})
    env["userprofile"] = PROFILE
