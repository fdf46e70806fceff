import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

# Property tests draw the same examples on every machine and every run (a CI machine must not find a new
# counterexample by chance and block a change that did not cause it), and are never failed for being slow
# on a busy machine.  Run with `--hypothesis-profile explore` to search beyond the fixed examples.
settings.register_profile(
    "runtrace", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("runtrace")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED = ROOT.parent / "shared"
SAMPLES_ZIP = SHARED / "samples" / "capa-testfiles.zip"
SAMPLES_CSV = SHARED / "samples" / "capa-testfiles.csv"


@pytest.fixture
def cli32() -> Path:
    return FIXTURES / "benign" / "cli-32.exe"


@pytest.fixture
def cli64() -> Path:
    return FIXTURES / "benign" / "cli-64.exe"


needs_shared = pytest.mark.skipif(not SAMPLES_ZIP.exists(), reason="../shared/samples is not present")
