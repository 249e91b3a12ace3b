"""The committed notebooks read on a code host without running: each was executed (every code cell has
its outputs) and no saved output names a directory of the machine that ran it, shows an error or a
progress bar. Executing them is nbmake's job (`make test`, at RNNKIT_NOTEBOOK_SMALL=1)."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# an absolute path of a Unix or Windows machine: /home/..., /tmp/..., /work/..., C:\...
ABSOLUTE = re.compile(r"(?<![\w.])(/(home|root|tmp|work|Users|usr|opt|var|mnt)/|[A-Za-z]:\\\\)")


def test_there_are_the_six_sections():
    assert len(NOTEBOOKS) >= 6, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_saved_and_clean(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c.get("execution_count") for c in code), "a code cell was not executed"
    assert any(c.get("outputs") for c in code), "no outputs saved"
    for cell in code:
        assert "execution" not in cell.get("metadata", {}), f"{cell.get('id')}: timing saved"
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{cell.get('id')}: saved an error"
            assert out.get("name") != "stderr", f"{cell.get('id')}: saved stderr (a warning or a bar)"
            text = json.dumps({k: v for k, v in out.items() if k != "data"}) + \
                json.dumps({k: v for k, v in out.get("data", {}).items() if not k.startswith("image/")})
            assert not ABSOLUTE.search(text), f"{cell.get('id')}: an absolute path in {text[:300]}"
            assert "\r" not in text, f"{cell.get('id')}: a carriage return (a progress bar)"


def test_the_checker_finds_a_path():
    assert ABSOLUTE.search('"text": "read /work/shared/data/x.txt"')
    assert ABSOLUTE.search(r'"C:\\Users\\me"')
    assert not ABSOLUTE.search('"text": "see notebooks/01_recurrence.ipynb, 1/2 done"')
