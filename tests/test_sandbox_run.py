"""`make run` without BOT_TOKEN, as a newcomer uses it: files are saved where it says, Ctrl-C
leaves quietly, and nothing is left in the temporary directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from aiogram import Router

from sandbox.commands import sandbox_router
from sandbox.exchanges import LocalExchange
from sandbox.threecommas import LocalThreeCommas
from tests.test_monitoring import monitor

# The sandbox ships in the checkout, not in the wheel: `make run` finds it from the repository.
ROOT = Path(__file__).resolve().parent.parent
USER = 1001


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


def sandbox_commands(
    exchanges: dict[str, LocalExchange], threecommas: LocalThreeCommas | None
) -> list[Router]:
    assert threecommas is not None
    return [sandbox_router(exchanges, threecommas)]


async def test_readme_walkthrough_steps_1_to_3_through_the_sandbox_commands(tmp_path):
    """README "The sandbox", steps 1-3, typed as the README says, against the sandbox's own commands
    (the real bot and worker, time on the FakeClock). Step 3's key prompt once showed its markup
    as text ("Now send the <b>API key</b>…") after the connection's title."""
    async with monitor(tmp_path, "binance", threecommas=True, routers=sandbox_commands) as m:
        rig, tg = m.rig, m.rig.tg
        # 1. /start, /sandbox_key binance, paste the /link line it prints.
        await rig.say(USER, "/start")
        created = await rig.say(USER, "/sandbox_key binance")
        [link] = [line for line in created.text.splitlines() if line.startswith("/link binance ")]
        assert "linked" in (await rig.say(USER, link)).text, tg.transcript(USER)

        # 2. /status shows the key 🟢; revoked, Refresh turns it 🔴 with the reason and the button.
        status = await rig.say(USER, "/status")
        assert "🟢 1. Binance" in status.text, status.text
        assert "revoked" in (await rig.say(USER, "/sandbox_revoke binance")).text
        await rig.press(USER, status, "Refresh")
        refreshed = await tg.wait_for(
            lambda: (now := tg.message(USER, status.message_id)) and "🔴" in now.text and now
        )
        assert "revoked" in refreshed.text
        assert any(b.text.startswith("⛔") and "Update API key" in b.text for b in refreshed.buttons)
        await m.run_for(60)  # within a minute the alert arrives
        alert = await tg.wait_for_bot_message(USER, contains="🔴 Binance")
        assert "⛔ Update API key" in [b.text for b in alert.buttons]

        # 3. A new key, Update API key, key and secret: 🟢, and a recovery message follows.
        created = await rig.say(USER, "/sandbox_key binance")
        [_, _, key, secret] = next(x for x in created.text.splitlines() if x.startswith("/link ")).split()
        await rig.press(USER, alert, "Update API key")
        prompt = await tg.wait_for_bot_message(USER, contains="New key for")
        assert "Now send the API key of your Binance account." in prompt.text, prompt.text
        assert "<b>API key</b>" in prompt.html and "&lt;" not in prompt.html, prompt.html
        assert "secret" in (await rig.say(USER, key)).text
        assert "New key saved" in (await rig.say(USER, secret)).text, tg.transcript(USER)
        await m.run_for(60)
        recovered = await tg.wait_for_bot_message(USER, contains="works again")
        assert recovered.text.startswith("🟢 Binance"), recovered.text


async def test_readme_walkthrough_steps_4_and_5_through_the_sandbox_commands(tmp_path):
    """README steps 4 and 5 as a fresh sandbox plays them (step 1, step 4 up to /orders, then
    /sandbox_reset), with the sandbox's poll interval: the texts README quotes and the counts it
    promises. What the checklist's buttons then do is tests/test_repair.py's."""
    async with monitor(
        tmp_path, "binance", threecommas=True, routers=sandbox_commands, poll_interval_seconds=10
    ) as m:
        rig, tg = m.rig, m.rig.tg
        await rig.say(USER, "/start")
        created = await rig.say(USER, "/sandbox_key binance")
        [link] = [line for line in created.text.splitlines() if line.startswith("/link binance ")]
        await rig.say(USER, link)
        tc_key, tc_secret = (await rig.say(USER, "/sandbox_3c")).text.splitlines()[-2:]
        await rig.say(USER, "/link3c")
        await rig.say(USER, tc_key)
        tg.user_sends(USER, tc_secret)
        mapping = await tg.wait_for_bot_message(USER, contains="which of your keysentry connections")
        await rig.press(USER, mapping, "Binance")
        listing = await rig.say(USER, "/orders")
        shown = await tg.wait_for(
            lambda: (now := tg.message(USER, listing.message_id)) and "📋" in now.text and now
        )
        assert "2 open orders: 🟢 1 active deal · 🟠 1 orphan" in shown.text, shown.text
        assert "deal #" in shown.text and "(cancelled)" in shown.text and "locks 0.01 BTC" in shown.text

        await m.tick(0)  # the first look only records what exists
        reset = await rig.say(USER, "/sandbox_reset")
        assert "Alerts follow within a minute" in reset.text, reset.text
        await m.run_for(60)  # within a minute
        alert = await tg.wait_for_bot_message(USER, contains="can no longer use the API key")
        title, reason = alert.text.split("\n")[:2]
        assert title == "🔴 3Commas account «Main» (Binance)", alert.text
        assert reason.startswith("3Commas can no longer use the API key of this exchange account"), reason
        assert "🔧 Update key in 3Commas" in [
            b.text for b in alert.buttons
        ]  # first: the cause, then what it broke
        said = [line for x in m.messages(USER) for line in x.text.splitlines()]
        switched_off = [line for line in said if line.startswith("🔴") and "switched off" in line]
        assert len(switched_off) == len(set(switched_off)) == 2, switched_off  # both bots, told apart

        await rig.press(USER, alert, "Update key in 3Commas")
        await tg.wait_for_bot_message(USER, contains="New exchange key")
        created = await rig.say(USER, "/sandbox_key binance")
        [_, _, key, secret] = next(x for x in created.text.splitlines() if x.startswith("/link ")).split()
        await rig.say(USER, key)
        tg.user_sends(USER, secret)
        accepted = await tg.wait_for_bot_message(USER, contains="accepted the new key")
        assert accepted.text.startswith("✅ 3Commas accepted the new key") and "works again" in accepted.text
        checklist = await tg.wait_for_bot_message(USER, contains="Recovery:")
        assert checklist.text.startswith("📋 Recovery"), checklist.text
        labels = [b.text for b in checklist.buttons]
        assert {"♻️ Recreate all (2)…", "🧹 Cancel orphans (2)…", "☑️ Old key deleted"} <= set(labels), labels
        await rig.press(USER, checklist, "Recreate all")
        plans = await tg.wait_for_bot_message(USER, contains="each exactly as below")
        assert "ETH/USDT" in plans.text and "SOL/USDT" in plans.text, plans.text
