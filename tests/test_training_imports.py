"""The training pipeline imports plotly only to write curation.html, and curates without it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_importing_the_pipeline_does_not_import_plotly():
    out = run("import sys, training.safer, training.curate, training.grpo; print('plotly' in sys.modules)")
    assert out.strip().splitlines()[-1] == "False"


def test_curation_writes_its_files_without_plotly(tmp_path):
    code = f"""
import sys
sys.modules['plotly'] = None  # as on a host without plotly: `import plotly...` raises ImportError
from pathlib import Path
from training.curate import CurationConfig, _plot
rows = [{{"harmful": True, "mean": 0.5, "std": 0.2, "kept": True, "anchor": False, "label": "a"}}]
_plot(rows, CurationConfig(), Path({str(tmp_path)!r}) / "curation.html")
print(Path({str(tmp_path)!r}, "curation.html").exists())
"""
    out = run(code)
    assert "plotly is not installed" in out and out.strip().splitlines()[-1] == "False"
