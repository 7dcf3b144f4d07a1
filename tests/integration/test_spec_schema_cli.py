"""`trigger-mesh schema` writes the trust store's schema beside the payload schemas, and
the committed copy is what it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mesh.security.trust import TRUST_STORE_SCHEMA_FILE, trust_store_schema

REPO = Path(__file__).resolve().parents[2]


def test_schema_export_writes_the_trust_store_schema(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "schema", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert TRUST_STORE_SCHEMA_FILE in result.stdout
    written = json.loads((tmp_path / TRUST_STORE_SCHEMA_FILE).read_text())
    assert written == trust_store_schema()
    committed = REPO / "docs" / "schemas" / TRUST_STORE_SCHEMA_FILE
    assert json.loads(committed.read_text()) == written, f"{committed}: run `make schema`"
