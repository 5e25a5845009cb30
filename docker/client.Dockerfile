# ClientApp runner of metals for a device: Flower's SuperExec image with the
# client side of metals and CPU-only PyTorch, without the server code.
#
# Build from the repository root for a PC (amd64) and a Raspberry Pi 4/5 (arm64):
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     -f docker/client.Dockerfile -t metals-client .
# NOTE: not built on the development machines (no Docker engine there). The
# base tag follows Flower's image naming; the COPY and pip steps assume the
# image's default user may write to /app and to its Python environment.
ARG FLWR_VERSION=1.42.0
FROM flwr/superexec:${FLWR_VERSION}

# Offline and reproducible: no telemetry, no update check, and no installation
# of app dependencies at run time (everything is installed below).
ENV FLWR_TELEMETRY_ENABLED=0 \
    FLWR_DISABLE_UPDATE_CHECK=1 \
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 \
    METALS_DATA_DIR=/data \
    PIP_NO_CACHE_DIR=1

# CPU-only PyTorch from the PyTorch CPU index, which has wheels for amd64 and arm64.
ARG TORCH_VERSION=2.13.0
RUN python -m pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu

# The other dependencies of metals (pyproject.toml); flwr comes with the base image.
RUN python -m pip install "hydra-core>=1.3" "numpy>=1.26" "pandas>=2.1" "pyarrow>=14" \
    "scikit-learn>=1.4" "imbalanced-learn>=0.12" "matplotlib>=3.8" "platformdirs>=3"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY metals ./metals
COPY common ./common
COPY server ./server
COPY client ./client
COPY conf ./conf
# A device runs no server code: remove the installed metals.server package and
# check that the ClientApp still imports without it.
RUN python -m pip install --no-deps . \
    && python -c "import pathlib, shutil, metals; shutil.rmtree(pathlib.Path(metals.__file__).parent / 'server')" \
    && python -c "import metals.client.app, metals.device"

ENTRYPOINT ["flower-superexec"]
