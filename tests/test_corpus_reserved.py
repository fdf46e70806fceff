"""Reserved software (npm packages, PyPI projects whose sha256 of the normalised name starts with 0 or 1)
never enters the corpus: the shipped config names none, and every path that could bring one in refuses."""

from __future__ import annotations

import hashlib

import pytest

from runtrace.corpus import fetch
from runtrace.corpus.build import build_corpus
from runtrace.corpus.reserved import ReservedError, normalise_pypi_name, refuse_reserved, reserved_reason
from runtrace.corpus.sources import Candidate, ConfigError, PypiSources, load_sources
from test_corpus_build import sources  # noqa: F401 - the fixture


def _is_reserved_pypi(name: str) -> bool:
    # The handbook's rule, written out independently of reserved.py.
    key = "-".join(part for part in name.lower().replace("_", "-").replace(".", "-").split("-") if part)
    return hashlib.sha256(key.encode()).hexdigest()[0] in "01"


def test_the_shipped_sources_name_no_reserved_project():
    cfg = load_sources()
    assert cfg.pypi is not None
    names = [*cfg.pypi.projects, *cfg.pypi.extra_pythons]
    assert names
    assert [n for n in names if _is_reserved_pypi(n)] == []
    assert all(reserved_reason("pypi", n) is None for n in names)
    # The six the sources once named, every one reserved.
    for gone in ("mypy", "pygame", "scikit-learn", "greenlet", "argon2-cffi-bindings", "orjson"):
        assert gone not in names and _is_reserved_pypi(gone) and reserved_reason("pypi", gone)


def test_the_rule_normalises_names_and_covers_npm():
    assert normalise_pypi_name("Scikit__Learn") == normalise_pypi_name("scikit.learn") == "scikit-learn"
    assert reserved_reason("pypi", "Scikit_Learn") is not None
    assert reserved_reason("pypi", "numpy") is None
    assert reserved_reason("npm", "left-pad") is not None
    assert reserved_reason("npm-registry", "anything") is not None
    assert reserved_reason("pypi-history", "orjson") is not None  # a later PyPI source type too
    assert reserved_reason("debian", "mypy") is None  # Debian packages are not reserved
    with pytest.raises(ReservedError, match=r"'mypy' is reserved: PyPI projects whose sha256"):
        refuse_reserved("pypi", "mypy")


def test_a_config_naming_a_reserved_project_is_refused_in_one_line(tmp_path):
    path = tmp_path / "sources.toml"
    path.write_text('[pypi]\nprojects = ["numpy", "PyGame"]\n')
    with pytest.raises(ConfigError) as info:
        load_sources(path)
    message = str(info.value)
    assert "\n" not in message and "sources.toml" in message and "'PyGame'" in message
    assert "sha256 of the normalised name starts with 0 or 1" in message


def test_a_reserved_project_is_never_downloaded(tmp_path, monkeypatch):
    def network(cmd, cwd, timeout_s):
        raise AssertionError("a reserved project must not reach pip")

    monkeypatch.setattr(fetch, "run_tool", network)
    with pytest.raises(ReservedError, match="orjson"):
        fetch.fetch_wheels("orjson", "win32", "3.11", tmp_path)


def test_the_build_refuses_a_reserved_name_from_a_config_edit(sources):  # noqa: F811
    opts, _ = sources
    # A config built in code skips load_sources: the build's own check still stops it before any download.
    opts.sources.pypi = PypiSources(projects=["alpha", "greenlet"], pe_suffixes=[".pyd"])
    with pytest.raises(ReservedError, match="'greenlet' is reserved"):
        build_corpus(opts)
    assert not (opts.corpus_dir / "manifest.parquet").exists()


def test_the_build_refuses_a_reserved_candidate_from_any_source_type(sources, monkeypatch):  # noqa: F811
    from runtrace.corpus import build

    opts, _ = sources
    # A source type added later (here an npm one) goes through the same gate as the built-in ones.
    npm = Candidate("benign", "npm", "left-pad", "1.3.0", "npm/left-pad", "left-pad/bin/x.exe", bytes)
    real = build._sources
    monkeypatch.setattr(build, "_sources", lambda o, p: iter([*real(o, p), npm]))
    with pytest.raises(ReservedError, match=r"npm package 'left-pad' is reserved: npm packages are reserved"):
        build_corpus(opts)
