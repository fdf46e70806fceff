"""The `[pypi_history]` section of sources.toml (apart from `pypi_history.py`, which needs `sources`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HistoryProject(BaseModel):
    """One project's entry in `[pypi_history]`, when it needs more than the defaults."""

    model_config = ConfigDict(extra="forbid")
    name: str
    sdists: bool = False  # also read sdists (prebuilt bootloaders / launchers live there)
    max_files: int | None = Field(default=None, ge=1)
    max_file_mb: int | None = Field(default=None, ge=1)
    group: str = ""  # origin group, when several projects ship one program (default: pypi/<name>)
    # The section's years, for this project only: a tool whose Windows programs were first shipped
    # after 2018 (ruff, clang-format, Qt's tool wheels) is read from its own years.
    first_year: int | None = None
    last_year: int | None = None
    # Only the programs (.exe) inside its downloads, not their DLLs and extension modules: for tool
    # wheels that bundle a runtime of DLLs beside a few programs, which the corpus has plenty of.
    programs_only: bool = False
    # Also read platform-independent wheels (`-none-any.whl`): some projects ship their Windows program
    # inside one wheel for every platform (Selenium's selenium-manager.exe).
    any_wheels: bool = False
    # One download per release and platform instead of one per Python version: for tool wheels whose
    # programs do not depend on the Python they were tagged for (cmake, ninja ship the same cmake.exe in
    # their cp27 and cp37 wheels), so the file cap buys releases, not copies.
    one_per_release: bool = False


class PypiHistorySources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first_year: int = 2005
    last_year: int = 2018
    # Files per project: spread over its releases, platforms and Python versions.
    max_files: int = Field(default=12, ge=1)
    max_file_mb: int = Field(default=80, ge=1)  # larger downloads are skipped and reported
    # PE files read per project, taken from its downloads in turn, programs first: the build's per-group
    # cap keeps fewer still, and parsing hundreds of near-identical modules per release only costs time.
    max_members: int = Field(default=150, ge=1)
    projects: list[str | HistoryProject] = []

    def entries(self) -> list[HistoryProject]:
        return [p if isinstance(p, HistoryProject) else HistoryProject(name=p) for p in self.projects]
