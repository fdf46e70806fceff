"""`runtrace scan` end to end: verdicts, unknowns, exit codes, the JSON document and bad inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runtrace.cli.app import app
from runtrace.scan.calibration import ProbabilityMap, write_calibration
from runtrace.scan.schema import SCHEMA_VERSION, ScanReport
from runtrace.scan.synthetic import PLANTED_ADDRESS
from scan_support import encrypted_zip, tiny_model_dir, write_traces

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> dict[str, Path]:
    return write_traces(
        tmp_path_factory.mktemp("traces"),
        {
            "benign1": (False, 700, {}),
            "benign2": (False, 702, {}),
            "evil": (True, 701, {}),
            "tiny": (True, 703, {"n_visits": 8}),  # 32 instructions: shorter than the model's training traces
        },
    )


def scan(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["scan", "--model", str(tiny_model_dir()), *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def scan_json(*args: str | Path) -> tuple[int, ScanReport, str]:
    code, out, err = scan("--json", *args)
    return code, ScanReport.model_validate_json(out), err


def by_name(report: ScanReport) -> dict[str, object]:
    return {Path(r.name.split(":")[-1]).stem: r for r in report.results}


def test_verdicts_unknown_and_exit_code_1(traces) -> None:
    code, report, _ = scan_json(traces["benign1"], traces["evil"], traces["tiny"])
    assert code == 1 and report.exit_code == 1
    results = by_name(report)
    assert results["benign1"].verdict == "benign"
    assert results["evil"].verdict == "malicious"
    tiny = results["tiny"]
    # Not judged: no probability, no window scores, no explanation (schema 2.0), and the reason says why.
    assert tiny.verdict == "unknown" and tiny.explanation is None and tiny.probability is None
    assert tiny.trace.window_probabilities == [] and tiny.trace.windows == 0
    assert tiny.reason == (
        "only 32 instructions executed (exited); at least 1,050 are needed for a verdict "
        "(the model's training minimum)"
    )
    assert report.min_instructions == 1050  # tests/fixtures/models/tiny-bsm/config.json
    evil = results["evil"]
    assert evil.probability >= evil.decision.threshold
    assert evil.explanation.towards_malicious[0].address == f"0x{PLANTED_ADDRESS:08x}"
    assert evil.trace.arch == "x86" and evil.trace.instructions > 200 and evil.trace.api_calls == 6
    assert report.summary.model_dump() == {"files": 3, "malicious": 1, "benign": 1, "unknown": 1, "errors": 0}


def test_exit_code_3_when_a_file_is_unknown_and_0_when_all_are_clean(traces) -> None:
    # A pipeline gating on the status must not read a file the model could not judge as clean.
    code, report, _ = scan_json(traces["benign1"], traces["benign2"], traces["tiny"])
    assert code == 3 and report.exit_code == 3
    assert [r.verdict for r in report.results] == ["benign", "benign", "unknown"]
    code, report, _ = scan_json(traces["benign1"], traces["benign2"])
    assert code == 0 and report.exit_code == 0


def test_errors_take_priority_over_unknown(traces, tmp_path: Path) -> None:
    code, report, _ = scan_json(traces["tiny"], tmp_path / "missing.exe")
    assert code == 2 and [r.verdict for r in report.results] == ["unknown", None]


def test_the_unknown_floor_is_the_models_training_minimum(traces, tmp_path: Path) -> None:
    """The floor comes from the model's config.json; a model that does not record it is taken to have
    been trained on traces of at least 1,000 instructions; --min-instructions overrides both."""
    import json as _json

    from runtrace.models.spec import UNRECORDED_MIN_INSTRUCTIONS

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), model)
    config = _json.loads((model / "config.json").read_text())

    def scan_with(floor, *extra):
        config["data"]["min_instructions"] = floor
        if floor is None:
            del config["data"]["min_instructions"]
        (model / "config.json").write_text(_json.dumps(config))
        result = CliRunner().invoke(
            app, ["scan", "--model", str(model), "--json", *extra, str(traces["benign1"])]
        )
        return ScanReport.model_validate_json(result.stdout)

    assert traces and scan_with(1100).results[0].verdict == "benign"  # benign1: 1,118 instructions
    report = scan_with(1200)
    assert report.min_instructions == 1200 and report.results[0].verdict == "unknown"
    assert report.results[0].probability is None
    assert scan_with(None).min_instructions == UNRECORDED_MIN_INSTRUCTIONS == 1000
    report = scan_with(1200, "--min-instructions", "500")
    assert report.min_instructions == 500 and report.results[0].verdict == "benign"
    assert scan_with(0).min_instructions == 1  # a trace of nothing is never judged


def test_exit_code_2_when_errors_and_nothing_malicious(traces, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.rtrace"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    code, report, err = scan_json(traces["benign1"], corrupt)
    assert code == 2
    assert [r.status for r in report.results] == ["ok", "error"]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(corrupt) in lines[0] and "Traceback" not in err


def test_a_detection_wins_over_errors(traces, tmp_path: Path) -> None:
    code, report, err = scan_json(traces["evil"], tmp_path / "[missing].exe")
    assert code == 1
    assert report.results[1].status == "error"
    assert f"{tmp_path / '[missing].exe'}: no such file or directory" in err  # brackets are not markup


def test_threshold_from_the_command_line_and_from_calibration(traces, tmp_path: Path) -> None:
    code, report, _ = scan_json("--threshold", "0", traces["benign1"])
    assert code == 1 and report.results[0].verdict == "malicious"
    assert report.decision.target_fpr is None and "--threshold" in report.decision.source

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), model)
    write_calibration(model, 0.25, 0.01, "synthetic held-out traces", model_version="tiny-1")
    result = CliRunner().invoke(app, ["scan", "--model", str(model), "--json", str(traces["benign1"])])
    report = ScanReport.model_validate_json(result.stdout)
    assert report.decision.model_dump() == {
        "threshold": 0.25,
        "target_fpr": 0.01,
        "source": "synthetic held-out traces",
        "probability": None,
    }
    assert report.results[0].model.version == "tiny-1"

    (model / "calibration.json").write_text('{"threshold": 2, "target_fpr": 0.01}')
    result = CliRunner().invoke(app, ["scan", "--model", str(model), str(traces["benign1"])])
    assert result.exit_code == 2 and "threshold must be between 0 and 1" in result.stderr


def test_a_probability_map_rescales_every_probability_and_keeps_the_verdict(traces, tmp_path: Path) -> None:
    """With Platt scaling in calibration.json, the file's P, each window's and the explanation's are
    the model's scores mapped; the threshold is on the mapped scale, so the verdict is the same."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), model)
    sample = str(traces["benign1"])

    def scan(*extra: str) -> ScanReport:
        result = CliRunner().invoke(app, ["scan", "--model", str(model), "--json", *extra, sample])
        return ScanReport.model_validate_json(result.stdout)

    write_calibration(model, 0.4, 0.01, "synthetic")
    plain = scan().results[0]
    mapping = ProbabilityMap(0.5, -0.3, "synthetic")
    write_calibration(model, mapping(0.4), 0.01, "synthetic", probability_map=mapping)
    report = scan()
    mapped = report.results[0]
    assert "Platt scaling" in report.decision.probability
    assert mapped.probability == pytest.approx(mapping(plain.probability), abs=1e-9)
    assert mapped.verdict == plain.verdict
    assert mapped.trace.window_probabilities == pytest.approx(
        [mapping(p) for p in plain.trace.window_probabilities], abs=2e-4
    )
    assert mapped.explanation.reference_probability == pytest.approx(
        mapping(plain.explanation.reference_probability), abs=2e-6
    )
    # A threshold from the command line is on the scale the scan reports.
    assert scan("--threshold", str(mapped.probability)).results[0].verdict == "malicious"


def test_scan_names_both_tracer_revisions_and_warns_when_they_differ(traces, tmp_path: Path) -> None:
    """The model's training revisions (`data.tracer_versions`) and the scan's tracer are named; a model
    trained on another revision's traces, or one that does not say, gets a warning in the header and
    the JSON."""
    from runtrace.trace.settings import TRACER_VERSION

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), model)
    config = json.loads((model / "config.json").read_text())

    def scan_with(versions, *extra):
        config["data"]["tracer_versions"] = versions
        (model / "config.json").write_text(json.dumps(config))
        return CliRunner().invoke(app, ["scan", "--model", str(model), *extra, str(traces["benign1"])])

    report = ScanReport.model_validate_json(scan_with(["runtrace-emu/0.1.0.4"], "--json").stdout)
    assert report.tracer_version == TRACER_VERSION
    assert report.model.trained_tracer_versions == ["runtrace-emu/0.1.0.4"]
    assert len(report.warnings) == 1 and "runtrace-emu/0.1.0.4" in report.warnings[0]
    assert TRACER_VERSION in report.warnings[0]
    text = scan_with(["runtrace-emu/0.1.0.4"]).stdout
    assert "warning:" in text and f"tracer {TRACER_VERSION}" in text.replace("\n", " ")
    assert ScanReport.model_validate_json(scan_with([TRACER_VERSION], "--json").stdout).warnings == []
    unrecorded = ScanReport.model_validate_json(scan_with(None, "--json").stdout)
    assert unrecorded.model.trained_tracer_versions is None and "does not record" in unrecorded.warnings[0]


def test_an_imported_trace_from_another_tracer_revision_gets_its_own_warning(
    traces, tmp_path: Path, cli32
) -> None:
    """A trace file made by another tracer revision than the model's training traces, or by anything but
    the emulator, is warned about in its own result; a program the scan traces itself is not."""
    from runtrace.scan.synthetic import synthetic_trace
    from runtrace.trace.formats.native import save_trace

    old = synthetic_trace(False, 700)
    old.meta.source, old.meta.tracer_version = "emulator", "runtrace-emu/0.1.0.12"
    old_path = save_trace(old, tmp_path / "old.rtrace")
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir(), model)
    config = json.loads((model / "config.json").read_text())

    def scan_with(versions, *paths, json_out=True):
        config["data"]["tracer_versions"] = versions
        (model / "config.json").write_text(json.dumps(config))
        args = ["scan", "--model", str(model), *(["--json"] if json_out else []), *map(str, paths)]
        result = CliRunner().invoke(app, args)
        if not json_out:
            return result.stdout
        return {Path(r.name).name: r.warnings for r in ScanReport.model_validate_json(result.stdout).results}

    warned = scan_with(["runtrace-emu/0.1.0.19"], old_path, traces["benign1"], cli32)
    assert len(warned["old.rtrace"]) == 1
    assert "made by runtrace-emu/0.1.0.12" in warned["old.rtrace"][0]
    assert "runtrace-emu/0.1.0.19" in warned["old.rtrace"][0]
    assert "imported synthetic trace" in warned["benign1.rtrace"][0]  # not the emulator's
    assert warned[cli32.name] == []  # traced by this scan: the report's own warning covers a mismatch
    assert scan_with(["runtrace-emu/0.1.0.12"], old_path)["old.rtrace"] == []
    text = scan_with(["runtrace-emu/0.1.0.19"], old_path, json_out=False)
    assert "warning: old.rtrace: this trace was made by runtrace-emu/0.1.0.12" in " ".join(text.split())


def test_json_document_round_trips_and_carries_versions(traces) -> None:
    _, out, _ = scan("--json", traces["evil"], traces["tiny"], traces["benign2"])
    report = ScanReport.model_validate_json(out)
    again = ScanReport.model_validate(json.loads(report.model_dump_json()))
    assert again == report
    assert report.schema_version == SCHEMA_VERSION
    for r in report.results:
        assert r.schema_version == SCHEMA_VERSION and r.tool.version and r.tool.name == "runtrace"
        assert r.model.kind == "bsm-lstm" and len(r.model.weights_sha256) == 64
        assert r.input_kind == "trace" and len(r.sha256) == 64
    with pytest.raises(ValueError):
        ScanReport.model_validate({**json.loads(out), "unexpected": 1})  # the schema is closed


def test_bad_inputs_are_one_line_errors_and_the_batch_goes_on(traces, tmp_path: Path, cli32) -> None:
    text = tmp_path / "notes.md"
    text.write_text("# not a program\n")
    corrupt = tmp_path / "damaged.rtrace"
    corrupt.write_bytes(traces["evil"].read_bytes()[:300])
    locked = encrypted_zip(tmp_path / "locked.zip", {"sample.exe": cli32.read_bytes()}, b"infected")
    missing = tmp_path / "missing.exe"
    code, report, err = scan_json("--password", "wrong", missing, text, locked, corrupt, traces["evil"])
    assert code == 1  # the good trace was still scanned, and it is malicious
    statuses = {r.name: (r.status, r.reason) for r in report.results}
    assert statuses[str(missing)] == ("error", "no such file or directory")
    assert statuses[str(text)][1].startswith("not a PE file")
    assert statuses[f"{locked}:sample.exe"][1] == "wrong or missing password (--password)"
    assert statuses[str(corrupt)][0] == "error" and str(corrupt) in statuses[str(corrupt)][1]
    assert statuses[str(traces["evil"])][0] == "ok"
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in err


def test_pe_files_copies_and_archive_members_are_traced(tmp_path: Path, cli32) -> None:
    copy = tmp_path / "copy-of-cli.exe"
    copy.write_bytes(cli32.read_bytes())
    archive = tmp_path / "samples.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("inner/cli.exe", cli32.read_bytes())
    code, report, err = scan_json("--workers", "1", cli32, copy, archive)
    assert code in (0, 1), err
    assert [r.name for r in report.results] == [str(cli32), str(copy), f"{archive}:inner/cli.exe"]
    first = report.results[0]
    assert first.status == "ok" and first.input_kind == "pe"
    assert (
        first.trace.source == "emulator" and first.trace.arch == "x86" and first.trace.stop_reason == "exited"
    )
    assert first.trace.instructions > 1000 and first.trace.api_calls > 0
    assert first.sha256 == first.traced_sample_sha256
    # The API calls with their arguments and results, and what the program did (schema 2.0).
    calls = first.api_calls
    assert calls.total == first.trace.api_calls == len(calls.calls)
    create = next(c for c in calls.calls if c.name == "KERNEL32.CreateProcessA")
    assert any(isinstance(a, str) and a.endswith('-script.py" "C:\\Users\\user\\Documents\\notes.txt"')
               for a in create.args)  # fmt: skip
    assert create.result is not None and not create.stubbed and create.return_address.startswith("0x")
    assert first.behaviour.processes[0]["event"] == "create"
    assert first.behaviour.processes[0]["path"].endswith("-script.py")
    assert first.behaviour.files and first.behaviour.strings
    assert len({r.probability for r in report.results}) == 1  # the same bytes, traced once


def test_missing_default_model_is_one_clear_line(monkeypatch, tmp_path: Path, traces) -> None:
    import runtrace.scan.scanner as scanner

    monkeypatch.setattr(scanner, "default_model_dir", lambda: tmp_path / "no-model-here")
    result = CliRunner().invoke(app, ["scan", str(traces["evil"])])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no default model installed" in result.stderr
    assert "--model" in result.stderr


def test_terminal_output_shows_table_and_explanation(traces) -> None:
    code, out, _ = scan(traces["evil"], traces["tiny"])
    assert code == 1
    assert "malicious" in out and "unknown" in out and "evil.rtrace" in out
    assert f"0x{PLANTED_ADDRESS:08x}" in out and "rdtsc" in out
    assert "uncalibrated" in out


def test_schema_option_prints_the_json_schema() -> None:
    result = CliRunner().invoke(app, ["scan", "--schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "ScanReport" and "FileResult" in schema["$defs"]


def test_real_process_exit_codes_and_no_traceback(traces, tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from runtrace.cli import main; main()", "scan"]
    done = subprocess.run(
        [*command, "--model", str(tiny_model_dir()), str(traces["evil"])],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stderr
    # main() leaves with os._exit (no interpreter teardown): everything written must still arrive.
    done = subprocess.run([*command, "--json", "--model", str(tiny_model_dir()), str(traces["evil"])],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 1 and json.loads(done.stdout)["exit_code"] == 1
    bad_model = tmp_path / "bad-model"
    bad_model.mkdir()
    done = subprocess.run([*command, "--model", str(bad_model), str(traces["evil"])],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not a runtrace model" in done.stderr
    assert "Traceback" not in done.stderr


def test_debugger_traces_are_scanned_without_emulation(tmp_path: Path) -> None:
    from runtrace.scan.synthetic import synthetic_trace
    from runtrace.trace.formats.registry import save_as

    trace = synthetic_trace(True, 721)
    x64dbg = save_as(trace, tmp_path / "run.trace32", "x64dbg")
    text = save_as(trace, tmp_path / "run.txt", "text")
    unnamed = tmp_path / "run-log-without-extension"
    unnamed.write_bytes(text.read_bytes())
    code, report, err = scan_json(x64dbg, text, unnamed)
    assert code == 1, err
    sources = [(r.status, r.input_kind, r.trace.source) for r in report.results]
    assert sources == [
        ("ok", "trace", "x64dbg"),
        ("ok", "trace", "x64dbg-text"),
        ("ok", "trace", "x64dbg-text"),
    ]
    # x64dbg traces carry no API calls (the text format keeps them in comments); the planted block is
    # still what the model sees.
    assert [r.api_calls.total for r in report.results] == [0, 6, 6]
    assert all(
        r.explanation.towards_malicious[0].address == f"0x{PLANTED_ADDRESS:08x}" for r in report.results
    )


def test_an_ism_model_scans_and_explains(traces) -> None:
    from scan_support import parity_model_dir

    result = CliRunner().invoke(
        app,
        ["scan", "--model", str(parity_model_dir("ism-bi2-last-attention")), "--json", str(traces["evil"])],
    )
    report = ScanReport.model_validate_json(result.stdout)
    assert report.model.representation == "ism" and report.model.kind == "ism-lstm"
    r = report.results[0]
    assert r.status == "ok" and r.trace.sequence_length == r.trace.instructions + r.trace.api_calls
    kinds = {c.kind for c in r.explanation.towards_malicious + r.explanation.towards_benign}
    assert kinds <= {"block", "api"} and r.explanation.units_exact > 0


def test_a_bsm_transformer_scans_and_explains(tmp_path) -> None:
    from scan_support import parity_model_dir

    model = parity_model_dir("bsm-transformer-mean")
    # Long enough to be judged: the model's training traces were at least 1,195 instructions.
    trace = write_traces(tmp_path, {"long": (True, 731, {"n_visits": 1500})})["long"]
    result = CliRunner().invoke(app, ["scan", "--model", str(model), "--json", str(trace)])
    report = ScanReport.model_validate_json(result.stdout)
    assert report.model.representation == "bsm" and report.model.kind == "bsm-transformer"
    r = report.results[0]
    assert r.status == "ok" and r.trace.sequence_length == r.trace.visits + r.trace.api_calls
    assert 0.0 < r.probability < 1.0 and r.explanation.units_exact > 0


def test_ctrl_c_reports_the_files_finished_and_exits_130(traces, monkeypatch) -> None:
    from runtrace.scan.scanner import Scanner

    real = Scanner._scan_trace_file
    seen = []

    def interrupted_on_the_second_file(self, item):
        seen.append(item)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(self, item)

    monkeypatch.setattr(Scanner, "_scan_trace_file", interrupted_on_the_second_file)
    code, report, err = scan_json(traces["benign1"], traces["evil"], traces["benign2"])
    assert code == 130 and report.exit_code == 130
    assert [Path(r.name).stem for r in report.results] == ["benign1"]
    assert "interrupted: 1 of 3 inputs scanned" in err and "Traceback" not in err
