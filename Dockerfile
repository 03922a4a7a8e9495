# supportbot — one image for all four services (gateway, nlp, dialogue, llm).
# The service is chosen by the command, e.g.:
#   docker run supportbot:latest serve nlp --host 0.0.0.0 --port 8001
#
# Build:  docker build -t supportbot:latest .

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# Stage 1: build the wheel and install it (with all extras) into a venv
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Compilers/headers only live in this stage, for dependencies without wheels.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libpq-dev \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"
RUN pip install --upgrade pip setuptools wheel build

WORKDIR /src
COPY . .

# Build the project wheel, then install it with the `all` extra into the venv.
RUN python -m build --wheel --outdir /wheels . \
 && WHEEL="$(ls /wheels/*.whl)" \
 && pip install "${WHEEL}[all]" \
 && supportbot --help > /dev/null

# ---------------------------------------------------------------------------
# Stage 2: slim runtime
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="supportbot" \
      org.opencontainers.image.description="Open-source customer-support chatbot (gateway, nlp, dialogue, llm services)"

# libpq5: runtime library for psycopg when its binary wheel is not used.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 \
 && rm -rf /var/lib/apt/lists/*

ARG APP_UID=10001
ARG APP_GID=10001
RUN groupadd --system --gid "${APP_GID}" supportbot \
 && useradd --system --uid "${APP_UID}" --gid "${APP_GID}" \
            --home-dir /app --shell /usr/sbin/nologin supportbot \
 && mkdir -p /app /data \
 && chown -R "${APP_UID}:${APP_GID}" /app /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/app \
    SUPPORTBOT_DATA_DIR=/data \
    XDG_CACHE_HOME=/data/.cache \
    HF_HOME=/data/.cache/huggingface \
    NLTK_DATA=/data/nltk_data

WORKDIR /app
USER 10001:10001

# gateway 8000 (public), nlp 8001, dialogue 8002, llm 8003
EXPOSE 8000 8001 8002 8003

# No HEALTHCHECK here: docker-compose and Kubernetes probe /healthz and /readyz.
ENTRYPOINT ["supportbot"]
CMD ["serve", "gateway", "--host", "0.0.0.0", "--port", "8000"]
