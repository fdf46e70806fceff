"""`GetProcAddress` of an exported variable gives the variable's address, as on Windows.

Speakeasy initialises a DLL's exported variables (msvcrt's `_acmdln`, `_environ`, `__argv`, `_iob`;
`winapi.install_crt_data` covers every C-runtime DLL) only for the import table.  `GetProcAddress`
went through `get_proc`, which hands out an API trampoline whatever the name is.  Windows' export table
does not tell functions from data: `GetProcAddress(msvcrt, "_acmdln")` is the address of the `char *`
itself.  Packed programs whose unpacker rebuilds the import table with `GetProcAddress` then read the
trampoline's bytes as the command line pointer and their C start-up faulted on its first character
(the `_except_handler3`/`_XcptFilter` exit of a dozen short corpus runs, revision 22).

Here a name the module's handler declares as data is initialised once per module and name, and every
later lookup gets the same storage, as the one variable of a loaded DLL.
"""

from __future__ import annotations


def install(emu) -> None:
    """Wrap the emulator's `get_proc` (what `GetProcAddress` answers with) on this instance."""
    original = emu.get_proc
    variables: dict[tuple[str, str], int] = {}

    def get_proc(mod_name, func_name):
        if not isinstance(func_name, str) or func_name.startswith("ordinal_"):
            return original(mod_name, func_name)
        key = (str(mod_name).lower(), func_name)
        if key not in variables:
            module, handler = emu.api.get_data_export_handler(mod_name, func_name)
            address = emu.api.call_data_func(module, handler, 0) if handler else None
            if not address:
                return original(mod_name, func_name)
            variables[key] = address
        return variables[key]

    emu.get_proc = get_proc
