"""FindResource's lookup (`resources.py`): string types and names match without regard to case, as the
resource compiler stores them upper-cased; a number matches only a numbered entry."""

from __future__ import annotations

from types import SimpleNamespace

from runtrace.trace.emulate import resources


def _entry(key, children):
    name = key if isinstance(key, str) else None
    ident = key if isinstance(key, int) else 0
    return SimpleNamespace(name=name, id=ident, directory=SimpleNamespace(entries=children))


def _image():
    data = SimpleNamespace(name=None, id=0x409, data="payload")
    named_type = _entry("BINRES", [_entry(131, [data]), _entry("CONFIG", [data])])
    numbered = _entry(131, [_entry(1, [SimpleNamespace(name=None, id=0x409, data="other")])])
    return SimpleNamespace(DIRECTORY_ENTRY_RESOURCE=SimpleNamespace(entries=[named_type, numbered]))


def test_a_string_type_matches_without_regard_to_case():
    image = _image()
    assert resources.find_resource(image, 131, "BinRes").data == "payload"
    assert resources.find_resource(image, "config", "binres").data == "payload"


def test_a_number_matches_only_a_numbered_entry():
    image = _image()
    assert resources.find_resource(image, 1, 131).data == "other"
    assert resources.find_resource(image, 131, 0) is None  # the named type's pefile id is 0
    assert resources.find_resource(image, 2, "BINRES") is None
    assert resources.find_resource(SimpleNamespace(), 1, 1) is None  # no resource directory
