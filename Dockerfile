# keysentry image: one image, three roles (`python -m bot migrate | serve | worker`), see
# docs/deploy/compose.yaml. The install is the one `make` does (an editable install of this
# checkout, so locales/ and the Alembic migrations are read from /app), without the dev extras.
# Like the wheel it holds the bot only: the sandbox runs from a repository checkout (`make run`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WEB_PORT=8080

WORKDIR /app
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin keysentry

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY services ./services
COPY locales ./locales
RUN python -m pip install --upgrade pip \
    && python -m pip install -e . \
    && python -c "from bot.i18n import compile_catalogs; compile_catalogs()" \
    && mkdir -p /app/data \
    && chown keysentry /app/data

USER keysentry
EXPOSE 8080
# /healthz answers while the process lives (bot/web.py); every role serves it on WEB_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WEB_PORT', '8080'), timeout=4)"]
CMD ["python", "-m", "bot"]
