"""The API process stays lean: importing the app loads none of the batch's heavy
libraries (Spark's client, the ALS trainer, scipy)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_importing_the_app_loads_no_pyspark_implicit_or_scipy() -> None:
    code = (
        "import json, sys, serve.app; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('pyspark', 'implicit', 'scipy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
