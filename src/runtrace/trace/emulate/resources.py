"""`FindResource`'s lookup of a resource by type and name, as Windows matches them.

The resource compiler stores string names and types in upper case, and `FindResource` upper-cases the
strings it is given before it looks: both compare without regard to case.  Speakeasy's lookup compared
the type exactly, so `FindResourceA(0, MAKEINTRESOURCE(131), "BinRes")` missed the program's own
`BINRES` resource; the program then passed the NULL handle on to `LoadResource` (whose handler read
address 0) and wrote through the NULL it got back (tracer revision 22: a family of droppers faulted
there after about 500 API calls).  It also let an integer type or name match a named entry by the
number pefile files with it; here a named entry matches only a string, a numbered one only a number.
"""

from __future__ import annotations


def _matches(entry, wanted) -> bool:
    if isinstance(wanted, str):
        return entry.name is not None and str(entry.name).upper() == wanted.upper()
    return entry.name is None and entry.id == wanted


def find_resource(pe, name, type_):
    """The first language's data entry of resource (type_, name) in the image, None where it has none.
    Each of name and type_ is an int (MAKEINTRESOURCE or "#123") or a string."""
    root = getattr(pe, "DIRECTORY_ENTRY_RESOURCE", None)
    if root is None:
        return None
    for resource_type in root.entries:
        if not _matches(resource_type, type_) or not hasattr(resource_type, "directory"):
            continue
        for resource in resource_type.directory.entries:
            if _matches(resource, name) and hasattr(resource, "directory") and resource.directory.entries:
                return resource.directory.entries[0]
    return None


def install(se) -> None:
    """Speakeasy's FindResource/FindResourceEx handlers call `self.find_resource(pe, name, type_)`: the
    instance attribute takes the place of that method for this emulator's kernel32 handlers."""
    se.emu.api.load_api_handler("kernel32").find_resource = find_resource
