import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

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
