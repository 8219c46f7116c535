# syntax=docker/dockerfile:1.7
#
# tfsoft images (multi-stage; pick one with --target). Build context: the repository root.
#
#   trainer        python:3.11-slim + `pip install .`; entrypoint `tfsoft` (train/export/...)
#   serving        stock tensorflow/serving:2.20.0 + tfsoft's server config; serves
#                  `tfsoft export --index brute_force` exports (stock TF ops only)
#   serving-scann  the same server config on a TF Serving binary with ScaNN's ops linked in,
#                  for `--index scann` exports; the binary is compiled by
#                  serving/Dockerfile.scann (stage scann-build) and copied from that image
#
#   docker build --target trainer -t tfsoft/trainer .
#   docker build --target serving -t tfsoft/serving:2.20.0 .
#   docker build -f serving/Dockerfile.scann --target scann-build \
#       -t tfsoft/tensorflow-serving-scann-build:2.20.0-scann1.4.2 .      # hours, once
#   docker build --target serving-scann -t tfsoft/serving-scann:2.20.0-scann1.4.2 .
#
# See serving/README.md for running and verifying the servers.

# Versions. TF Serving 2.20.0 matches the TensorFlow 2.20 tfsoft trains with (a server
# older than the exporting TF can reject newer ops/attributes); tensorflow/serving:2.20.0
# and :2.20.0-devel are the release images of TF Serving tag 2.20.0.
ARG PYTHON_IMAGE=python:3.11-slim
ARG TF_SERVING_IMAGE=tensorflow/serving:2.20.0
# The image built from serving/Dockerfile.scann --target scann-build (see above). Only the
# serving-scann target needs it; BuildKit (the default builder) skips unused stages.
ARG SCANN_BUILD_IMAGE=tfsoft/tensorflow-serving-scann-build:2.20.0-scann1.4.2
ARG RUNTIME_BASE_IMAGE=ubuntu:22.04@sha256:eb29ed27b0821dca09c2e28b39135e185fc1302036427d5f4d70a41ce8fd7659

# ======================================================================================
# trainer: the tfsoft CLI
# ======================================================================================
FROM ${PYTHON_IMAGE} AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/tfsoft
# Only what the package needs (pyproject's `readme` is README.md); runs/, exports/ and
# the local .venv stay out of the image. Mount data and run directories at run time.
COPY pyproject.toml README.md ./
COPY tfsoft ./tfsoft
RUN pip install . && tfsoft --help > /dev/null
WORKDIR /work
ENTRYPOINT ["tfsoft"]
CMD ["--help"]

# ======================================================================================
# serving: stock TF Serving for brute-force exports. Copies no model: the export
# directory is mounted at /models/tfsoft (read-only is fine).
# ======================================================================================
FROM ${TF_SERVING_IMAGE} AS serving
COPY serving/models.config serving/batching_parameters.txt serving/monitoring.config /etc/tfsoft-serving/
RUN mkdir -p /models/tfsoft
EXPOSE 8500 8501
# The stock image's entrypoint (tf_serving_entrypoint.sh) always adds --model_name and
# --model_base_path; TF Serving ignores them once --model_config_file is set, but calling
# the binary directly keeps the command line exactly what is written here.
ENTRYPOINT ["/usr/bin/tensorflow_model_server"]
CMD ["--port=8500", \
     "--rest_api_port=8501", \
     "--model_config_file=/etc/tfsoft-serving/models.config", \
     "--model_config_file_poll_wait_seconds=60", \
     "--file_system_poll_wait_seconds=1", \
     "--monitoring_config_file=/etc/tfsoft-serving/monitoring.config", \
     "--enable_model_warmup=true"]

# ======================================================================================
# serving-scann: TF Serving + ScaNN ops for ScaNN exports. Same layout as `serving`.
# (serving/Dockerfile.scann's final stage builds the same image in one go.)
# ======================================================================================
FROM ${SCANN_BUILD_IMAGE} AS scann-binary

FROM ${RUNTIME_BASE_IMAGE} AS serving-scann
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
COPY --from=scann-binary /usr/local/bin/tensorflow_model_server /usr/bin/tensorflow_model_server
COPY serving/models.config serving/batching_parameters.txt serving/monitoring.config /etc/tfsoft-serving/
RUN mkdir -p /models/tfsoft
EXPOSE 8500 8501
ENTRYPOINT ["/usr/bin/tensorflow_model_server"]
CMD ["--port=8500", \
     "--rest_api_port=8501", \
     "--model_config_file=/etc/tfsoft-serving/models.config", \
     "--model_config_file_poll_wait_seconds=60", \
     "--file_system_poll_wait_seconds=1", \
     "--monitoring_config_file=/etc/tfsoft-serving/monitoring.config", \
     "--enable_model_warmup=true"]
