"""`make run` without BOT_TOKEN, as a newcomer uses it: files are saved where it says, Ctrl-C
leaves quietly, and nothing is left in the temporary directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

# The sandbox ships in the checkout, not in the wheel: `make run` finds it from the repository.
ROOT = Path(__file__).resolve().parent.parent


def test_export_is_saved_and_ctrl_c_leaves_no_traceback_and_no_temp_dir(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot"],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "TMPDIR": str(temp),
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        },
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    shown: list[str] = []
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("/start\n/export\n")
        process.stdin.flush()
        for line in process.stdout:
            shown.append(line)
            if "saved to" in line:
                break
        assert any("Quit with /quit or Ctrl-C" in line for line in shown)
        process.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        rest, errors = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(shown) + rest + errors
    assert process.returncode == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    [saved_line] = [line for line in shown if "saved to" in line]
    path = Path(saved_line.split("saved to ", 1)[1].split("]", 1)[0])
    assert path == tmp_path / "data" / "sandbox" / "keysentry-export.json"
    assert isinstance(json.loads(path.read_text()), dict)
    assert not list(temp.glob("keysentry-sandbox-*")), os.listdir(temp)
