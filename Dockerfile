# glide-api on an NVIDIA GPU: the web UI and all three API families, served by waitress.
#
#   docker build -t glide-api .
#   docker run -d --name glide-api --gpus all -p 5000:5000 -v glide-models:/models glide-api
#
# The image holds code only. The weights (about 6 GB for the four models the service loads) are
# downloaded into the /models volume on the first start, or come from a volume filled beforehand
# (`docker run --rm -v glide-models:/models glide-api download all`). docs/docker.md has the rest.

# Both stages must use the same image: the virtualenv refers to the interpreter by its path.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: a virtualenv holding torch (CUDA build) and the package -----------------------------
FROM ${PYTHON_IMAGE} AS builder

# On Linux, PyPI's plain `torch` wheel is the CUDA build. Up to torch 2.10 it bundles CUDA 12.8
# (NVIDIA driver R570 or newer); from 2.11 on it bundles CUDA 13 (driver R580 or newer). For a
# CUDA 13 host: --build-arg TORCH_BELOW=2.14. The floor is pyproject's own.
ARG TORCH_BELOW=2.11

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, in a layer of its own: several GB that need not be fetched again when the code changes.
RUN python -m venv /opt/venv \
    && pip install --no-cache-dir "torch>=2.1,<${TORCH_BELOW}"

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY glide_api ./glide_api
RUN pip install --no-cache-dir . \
    && glide-api --version

# ---- runtime: slim Python, the virtualenv, an unprivileged user --------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="glide-api" \
      org.opencontainers.image.description="Self-hosted GLIDE text-to-image service: web UI, REST APIs" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric UID/GID, so volume ownership is predictable. /models is created here, owned by
# that user, so a fresh named volume mounted on it starts out writable.
RUN groupadd --system --gid 10001 glide \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/glide --create-home \
               --shell /usr/sbin/nologin glide \
    && mkdir /models \
    && chown 10001:10001 /models

COPY --from=builder /opt/venv /opt/venv

# Every GLIDE_API_* variable is a setting (docs/configuration.md); flags after the image name
# (e.g. `serve --max-batch-size 2`) override them.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GLIDE_API_HOST=0.0.0.0 \
    GLIDE_API_PORT=5000 \
    GLIDE_API_CACHE=/models \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

VOLUME ["/models"]
EXPOSE 5000

USER 10001:10001
WORKDIR /home/glide

# Healthy once /readyz answers 200, i.e. the models are loaded. The first start downloads about
# 6 GB before that, hence the long start period (failures inside it are not counted). The probe
# ignores any HTTP(S)_PROXY given to the container for downloads.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:%s/readyz' % os.environ.get('GLIDE_API_PORT', '5000'), timeout=4)"]

ENTRYPOINT ["glide-api"]
CMD ["serve"]
