"""End-to-end facts of emulated traces of the bundled benign fixtures (and one real sample)."""

import subprocess
import sys
import zipfile

import numpy as np
import pytest
from speakeasy.profiler import Run

from conftest import FIXTURES, SAMPLES_ZIP, needs_shared
from runtrace.trace.emulate.emulator import TracerSettings, emulate
from runtrace.trace.emulate.inputs import sha256_of
from runtrace.trace.formats.native import load_trace, save_trace
from runtrace.trace.model import Arch, StopReason


def _trace(path, **settings):
    data = path.read_bytes()
    return emulate(data, sha256_of(data), str(path), TracerSettings(**settings))


def test_i386_launcher_trace_facts(cli32, tmp_path):
    tr = _trace(cli32)
    assert tr.arch is Arch.X86
    assert tr.meta.sha256 == "32acc1bc543116cbe2cff10cb867772df2f254ff2634c870aef0b46c4b696fdb"
    # The EXE entry point (image base 0x400000 + AddressOfEntryPoint 0x1b87) is the first instruction.
    assert tr.meta.entry_points[0].kind == "entry"
    assert tr.meta.entry_points[0].address == 0x401B87
    first = [insn for _, insn in zip(range(4), (i for _, i in tr.iter_instructions()), strict=False)]
    assert [i.address for i in first] == [0x401B87, 0x401F51, 0x401F57, 0x401F58]
    assert [i.text for i in first] == [
        "call 0x401f51",
        "mov ecx, dword ptr [0x404004]",
        "push esi",
        "push edi",
    ]
    names = [c.name for c in tr.api_calls]
    assert "KERNEL32.GetSystemTimeAsFileTime" in names
    assert "KERNEL32.GetModuleFileNameA" in names
    # MSVC's security-cookie set-up runs before any API call.
    assert names[0] == "KERNEL32.GetSystemTimeAsFileTime"
    assert tr.instruction_count > 1000
    assert tr.meta.stop_reason is StopReason.EXITED
    # Calls Speakeasy has no handler for are stubbed and recorded, not fatal.
    stubbed = {c.name for c in tr.api_calls if not c.supported}
    assert "api-ms-win-crt-filesystem-l1-1-0._splitpath" in stubbed
    assert any(e["type"] == "unsupported_api" for e in tr.meta.events)
    # API positions point at the block that made the call: its last instruction is a call.
    for call in tr.api_calls[:20]:
        last = tr.block_instructions(int(tr.visits[call.position]))[-1]
        assert last.mnemonic in ("call", "jmp")  # direct call, or a jmp [IAT] thunk
    back = load_trace(save_trace(tr, tmp_path / "t.rtrace"))
    assert back.blocks == tr.blocks
    assert (back.visits == tr.visits).all()
    assert back.api_calls == tr.api_calls
    assert back.meta.entry_points == tr.meta.entry_points


def test_amd64_launcher(cli64):
    tr = _trace(cli64)
    assert tr.arch is Arch.AMD64
    assert tr.meta.entry_points[0].address == 0x140001D40  # image base 0x140000000 + entry RVA 0x1d40
    first = next(i for _, i in tr.iter_instructions())
    assert first.text == "sub rsp, 0x28"
    assert tr.instruction_count > 1000


def test_instruction_cap_stops_the_trace(cli32):
    tr = _trace(cli32, max_instructions=500)
    assert tr.meta.stop_reason is StopReason.INSTRUCTION_CAP
    # Enforced at block granularity: at most one block past the cap.
    assert 500 <= tr.instruction_count < 500 + max(b.instruction_count for b in tr.blocks) + 1


def test_blocks_are_canonical(cli32):
    tr = _trace(cli32)
    from runtrace.trace.disasm import is_control_transfer

    for i, block in enumerate(tr.blocks):
        insns = tr.block_instructions(i)
        assert sum(block.insn_lengths) == block.size
        # Control transfers only ever end a block.
        assert not any(is_control_transfer(x.mnemonic) for x in insns[:-1])


@needs_shared
def test_real_malware_sample_from_the_encrypted_zip(tmp_path):
    # Read straight from the zip (never extracted into the repository), emulated, never executed.
    from runtrace.trace.emulate.batch import trace_batch
    from runtrace.trace.emulate.inputs import Sample

    sha = "39fb2b683dacbaceb78995cd4cedff87ae1514e8aa3678de5deec7ccec187680"
    with zipfile.ZipFile(SAMPLES_ZIP) as z:
        size = z.getinfo(f"{sha}.bin").file_size
    sample = Sample(sha, "sample", str(SAMPLES_ZIP), f"{sha}.bin", "infected", size)
    (outcome,) = trace_batch([sample], tmp_path, TracerSettings(), workers=1)
    assert outcome.status == "ok" and outcome.arch == "x86"
    tr = load_trace(outcome.path)
    assert tr.meta.sha256 == sha
    assert tr.meta.stop_reason is StopReason.INSTRUCTION_CAP
    cap = TracerSettings().max_instructions
    assert cap <= tr.instruction_count < cap + 1_000


def test_decoy_images_are_cached_on_disk_and_give_the_same_trace(cli32, tmp_path, monkeypatch):
    from runtrace.trace.emulate import decoys

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(decoys, "_images", {})
    data = cli32.read_bytes()
    built = emulate(data, "x")
    images = sorted(decoys.cache_dir().rglob("*.img"))
    assert len(images) > 10  # kernel32, ntdll, user32, ... one file per decoy DLL

    monkeypatch.setattr(decoys, "_images", {})  # a new process: only the files are left
    monkeypatch.setattr(decoys, "_templates", decoys._Templates())
    from_disk = emulate(data, "x")
    assert np.array_equal(built.visits, from_disk.visits)
    assert [b.data for b in built.blocks] == [b.data for b in from_disk.blocks]
    assert [c.name for c in built.api_calls] == [c.name for c in from_disk.api_calls]


def test_parsed_decoy_modules_are_shared_unchanged_and_a_mapped_decoy_is_private(cli32, monkeypatch):
    # Every emulation gets copies of the decoy modules parsed once per process; the launcher loads its
    # script's path as a DLL, which Speakeasy answers with a decoy it maps, which must first become a
    # private copy: the templates stay as parsed and a second emulation gives the same trace.
    from runtrace.trace.emulate import decoys

    templates = decoys._Templates()
    monkeypatch.setattr(decoys, "_templates", templates)
    privatised = []
    make_private = decoys._Templates.make_private

    def spy(module):
        privatised.append(module)
        make_private(module)

    monkeypatch.setattr(decoys._Templates, "make_private", staticmethod(spy))
    first = _trace(cli32)
    parsed = dict(templates._parsed)
    before = {key: (dict(vars(t)), t.OPTIONAL_HEADER.ImageBase, t.__data__) for key, t in parsed.items()}
    second = _trace(cli32)

    assert privatised and len(parsed) > 10
    for module in privatised:
        assert "runtrace_template" not in vars(module) and module.is_mapped
        assert all(section.pe is module for section in module.sections)
        for t in parsed.values():
            assert module is not t and module.OPTIONAL_HEADER is not t.OPTIONAL_HEADER
    assert templates._parsed == parsed  # the second emulation parsed nothing new
    for key, t in parsed.items():
        attrs, image_base, data = before[key]
        assert vars(t).keys() == attrs.keys() and all(vars(t)[k] is v for k, v in attrs.items())
        assert (t.OPTIONAL_HEADER.ImageBase, t.__data__) == (image_base, data)
        assert not t.is_mapped and t.decoy_base == 0
    assert np.array_equal(first.visits, second.visits)
    assert [b.data for b in first.blocks] == [b.data for b in second.blocks]
    assert first.api_calls == second.api_calls


def test_unwritable_decoy_cache_only_costs_speed(cli32, tmp_path, monkeypatch):
    from runtrace.trace.emulate import decoys

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(decoys, "_images", {})
    assert emulate(cli32.read_bytes(), "x").instruction_count > 1000


def test_python_extension_module_runs_its_exec_slot():
    # PyInit__imagingtk only returns its module definition; the stand-in host must run the definition's
    # Py_mod_exec slot, where the module imports tkinter and looks up the Tcl/Tk DLLs.
    trace = _trace(FIXTURES / "benign" / "pillow-imagingtk-64.pyd")
    kinds = [(e.kind, e.name) for e in trace.meta.entry_points]
    assert ("export", "PyInit__imagingtk") in kinds
    assert ("python", "mod_exec_0") in kinds
    calls = [c.name for c in trace.api_calls]
    assert calls.index("python311.PyModuleDef_Init") < calls.index("python311.PyImport_ImportModule")
    assert "PSAPI.EnumProcessModules" in calls
    # Then the module's one function, `tkinit`, as Python would call it (revision 10): it parses its
    # argument with PyArg_ParseTuple, which stores a stand-in object, and goes on to convert it; since
    # revision 16 EnumProcessModules lists the process's modules, where (Speakeasy resolving any name)
    # it finds Tcl's functions, and tkinit registers its Tcl command with them.
    assert kinds[-1] == ("python", "function.tkinit")
    tkinit = calls[calls.index("python311.PyArg_ParseTuple") :]
    assert tkinit[:3] == [
        "python311.PyArg_ParseTuple",
        "python311.PyLong_AsVoidPtr",
        "svchost.Tcl_CreateCommand",
    ]


def test_tracing_imports_neither_setuptools_nor_jsonschema_and_leaves_the_real_ones_importable():
    fixture = FIXTURES / "benign" / "cli-32.exe"
    code = (
        "import sys, hashlib, pathlib\n"
        "from runtrace.trace.emulate.emulator import TracerSettings, emulate\n"
        f"data = pathlib.Path({str(fixture)!r}).read_bytes()\n"
        "trace = emulate(data, hashlib.sha256(data).hexdigest(), 'cli-32.exe', TracerSettings())\n"
        "assert trace.instruction_count > 1000\n"
        "assert not {'pkg_resources', 'distutils', 'setuptools', 'jsonschema'} & set(sys.modules)\n"
        "import jsonschema, jsonschema.exceptions\n"
        "assert hasattr(jsonschema, 'Draft7Validator') and hasattr(jsonschema.exceptions, 'SchemaError')\n"
        "import speakeasy.speakeasy as s\n"
        "assert s.jsonschema.Draft7Validator is jsonschema.Draft7Validator  # the stand-in answers too\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_decoy_cache_is_keyed_by_the_installed_speakeasy_release_and_the_image_layout():
    from importlib import metadata

    from runtrace.trace.emulate import decoys

    assert decoys._speakeasy_release() == metadata.version("speakeasy-emulator")
    # and by runtrace's own layout of the images
    assert decoys.cache_dir().name == f"{metadata.version('speakeasy-emulator')}-{decoys._LAYOUT}"


def test_tracing_runs_no_subprocess_and_imports_arc4_only_when_a_program_needs_it():
    # pycryptodome's ARC4 asks platform.architecture(), which runs `file` in a subprocess, when it loads.
    fixture = FIXTURES / "benign" / "cli-32.exe"
    code = (
        "import sys, hashlib, pathlib, subprocess\n"
        "popen, subprocess.Popen = subprocess.Popen, None  # any subprocess would fail\n"
        "from runtrace.trace.emulate.emulator import TracerSettings, emulate\n"
        f"data = pathlib.Path({str(fixture)!r}).read_bytes()\n"
        "trace = emulate(data, hashlib.sha256(data).hexdigest(), 'cli-32.exe', TracerSettings())\n"
        "assert trace.instruction_count > 1000\n"
        "assert 'Crypto.Cipher.ARC4' not in sys.modules\n"
        "subprocess.Popen = popen\n"
        "from speakeasy.winenv.api.usermode import advapi32\n"
        "from Crypto.Cipher import ARC4\n"
        "assert ARC4 is not advapi32.ARC4 and hasattr(ARC4, 'new')\n"
        "assert advapi32.ARC4.new(b'key').encrypt(b'text') == ARC4.new(b'key').encrypt(b'text')\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "settings", [TracerSettings(), TracerSettings(max_instructions=10, timeout_s=0, max_api_calls=1)]
)
def test_the_emulator_configuration_is_valid_for_speakeasy(settings):
    # The emulator skips Speakeasy's per-run validation (emulator._Speakeasy); this is where it is done.
    from speakeasy.speakeasy import validate_config

    from runtrace.trace.emulate.emulator import _speakeasy_config

    validate_config(_speakeasy_config(settings))


def test_a_run_that_cannot_be_set_up_is_an_error_not_a_crash(cli32, monkeypatch):
    from speakeasy.windows.winemu import WindowsEmulator
    from unicorn import UcError
    from unicorn.unicorn_const import UC_ERR_READ_UNMAPPED

    def broken_tls(self, thread):  # what a TLS directory pointing at unmapped memory does
        raise UcError(UC_ERR_READ_UNMAPPED)

    monkeypatch.setattr(WindowsEmulator, "init_tls", broken_tls)
    trace = _trace(cli32)
    assert trace.meta.stop_reason is StopReason.EMULATION_FAULT
    assert trace.meta.stop_detail.startswith("run set-up failed: UcError")


def test_entry_kinds_of_unusual_run_types():
    from runtrace.trace.emulate.emulator import _entry_kind

    assert _entry_kind(27) == ("callback", "27")  # Speakeasy names some callback runs with an int
    assert _entry_kind("python.mod_exec_0") == ("python", "mod_exec_0")
    assert _entry_kind("dll_entry.DLL_PROCESS_ATTACH") == ("DllMain", "DLL_PROCESS_ATTACH")


def _capa_member(sha: str) -> bytes:
    with zipfile.ZipFile(SAMPLES_ZIP) as z:
        z.setpassword(b"infected")
        return z.read(f"{sha}.bin")


@needs_shared
@pytest.mark.parametrize(
    "sha",
    [
        "e30b2b657ad0b050762e66a3f3c8ded2e8834902b456646165a31ceb478a6911",  # x86, msvcr100 _acmdln
        "a4cbe4f41263b833294d2749de34fc588ca44d9bc5e3a78bbdce515250c220c6",  # amd64, msvcrt _commode/_fmode
    ],
)
def test_programs_importing_crt_variables_get_past_their_start_up(sha):
    # Before, Speakeasy left these imports pointing at API trampolines: the first read faulted inside
    # the start-up code's __try, its filter (_XcptFilter) ran, and the program exited within 200
    # instructions.  (The amd64 program's filter runs later, since amd64 exceptions reach the
    # program's handlers: a read through the pointer a stubbed CoCreateInstance left unset.)
    trace = emulate(_capa_member(sha), sha, "sample", TracerSettings(max_instructions=3_000))
    calls = [c.name.split(".", 1)[1] for c in trace.api_calls]
    assert trace.instruction_count > 1_000 and "_XcptFilter" not in calls[:40]


@needs_shared
def test_a_call_through_a_null_pointer_returns_zero_and_the_program_goes_on():
    # Its WM_DESTROY handler calls a function pointer that nothing in the emulation set.
    sha = "f3d26873a20dc26128d083f5b0653e139ffb6b29c541d02ec88971e1d5819999"
    trace = emulate(_capa_member(sha), sha, "sample", TracerSettings(max_instructions=100_000))
    (null_calls,) = [e for e in trace.meta.events if e["type"] == "null_calls"]
    assert null_calls["count"] >= 1
    # It goes on through its message loop; since allocations start at 64 KiB (tracer revision 9) it
    # then ends in its stack-cookie check (int 0x29) rather than by exiting.
    assert "invalid_fetch" not in trace.meta.stop_detail and trace.instruction_count > 20_000
    after = [c.name for c in trace.api_calls if c.position > trace.api_calls[0].position]
    assert "USER32.DispatchMessageW" in after


def test_each_export_has_an_instruction_budget_and_the_runs_after_it_still_start():
    pyd = (FIXTURES / "benign" / "pillow-imagingtk-64.pyd").read_bytes()
    full = emulate(pyd, "x", settings=TracerSettings())
    cut = emulate(pyd, "x", settings=TracerSettings(export_budget=1))
    # DllMain has no budget: it runs as far as before; PyInit ends after its first block.
    dllmain_end = [e.first_visit for e in full.meta.entry_points if e.kind == "export"][0]
    assert [e.first_visit for e in cut.meta.entry_points if e.kind == "export"][0] == dllmain_end
    # PyInit is one block (it jumps to PyModuleDef_Init); the exec slot and the module function queued
    # after it are each cut short.
    errors = [e for e in cut.meta.events if e["type"] == "run_error"]
    assert [(e["run"], e["error"]) for e in errors] == [
        ("python.mod_exec_0", "run_budget"),
        ("python.function.tkinit", "run_budget"),
    ]
    assert cut.meta.stop_reason is StopReason.INSTRUCTION_CAP
    assert cut.meta.stop_detail == "1 instructions in python.function.tkinit"
    assert cut.instruction_count < full.instruction_count


def test_exports_outside_executable_sections_are_data_and_do_not_run():
    # lxml's etree.pyd exports its type objects (`LxmlElementType`, in .data) beside `initetree`;
    # Speakeasy ran each as code, which faulted and used up the zero pages before `initetree` ran.
    from runtrace.trace.emulate.emulator import _Session

    session = _Session((FIXTURES / "benign" / "pillow-imagingtk-64.pyd").read_bytes(), TracerSettings())
    base = session.module.get_base()
    sections = {s.Name.rstrip(b"\0"): base + s.VirtualAddress for s in session.module.sections}
    assert session._executable(sections[b".text"]) and not session._executable(sections[b".rdata"])
    run = Run()
    run.type, run.start_addr, run.args = "export.SomeVariable", sections[b".data"], [0, 0, 0, 0]
    session.emu.add_run(run)
    assert session.data_exports == ["SomeVariable"]
    assert all(r is not run for r in session.emu.run_queue)
