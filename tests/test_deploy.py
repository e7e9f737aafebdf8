"""The deployable image and the compose example say what docs/deployment.md promises.

No Docker daemon runs here, so these read the files the way Docker would: the Dockerfile's
instructions (continuation lines joined) and the compose file as YAML.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_dockerfile_is_slim_non_root_and_checks_healthz():
    instructions = _instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert set(keywords) <= {"FROM", "ENV", "WORKDIR", "RUN", "COPY", "USER", "EXPOSE", "HEALTHCHECK", "CMD"}
    [base] = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base)
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}
    [health] = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    command = json.loads(health.split("CMD", 1)[1])
    assert command[0] == "python" and "/healthz" in command[-1]
    assert json.loads(next(rest for keyword, rest in instructions if keyword == "CMD")) == [
        "python", "-m", "bot",
    ]  # fmt: skip


def test_dockerfile_installs_like_make_and_copies_what_runs():
    make_install = re.search(r"pip install --quiet (-e '\.\[dev\]')", (ROOT / "Makefile").read_text())
    assert make_install, "the Makefile's install line moved"
    runs = " ".join(rest for keyword, rest in _instructions() if keyword == "RUN")
    assert "python -m pip install -e ." in runs  # the same editable install, without the dev extras
    copied = {rest.split()[0] for keyword, rest in _instructions() if keyword == "COPY"}
    packages = re.search(r"include = \[([^\]]*)\]", (ROOT / "pyproject.toml").read_text())
    assert packages
    for package in re.findall(r'"(\w+)\*"', packages[1]):
        assert package in copied, f"{package}/ is installed by pyproject.toml but not copied"
    assert {"pyproject.toml", "locales"} <= copied
    assert "sandbox" not in copied and "tests" not in copied  # the image is the bot, like the wheel


def test_compose_runs_migrations_then_one_serve_and_two_workers_on_postgres():
    compose = yaml.safe_load((ROOT / "docs" / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres:")
    [volume] = services["db"]["volumes"]
    assert volume.split(":")[0] in compose["volumes"]
    roles = {name: service["command"][-1] for name, service in services.items() if "command" in service}
    assert roles == {"migrate": "migrate", "serve": "serve", "worker": "worker"}
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services.get("serve", {}).get("deploy", {}).get("replicas", 1) == 1
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for role in ("serve", "worker"):
        service = services[role]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["build"] == ".." and (ROOT / "Dockerfile").exists()
        assert service["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
    # The rate is deployment-wide (senders split it through the database), so it alone must stay
    # under Telegram's ~30 messages a second, however many workers send.
    assert int(services["worker"]["environment"]["SEND_RATE_PER_SECOND"]) < 30
