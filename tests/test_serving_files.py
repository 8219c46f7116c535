"""The TF Serving deployment files (serving/, Dockerfile) parse and agree with each other.

Text protos are parsed with protobuf's ``text_format`` into TF Serving's own messages:
``ModelServerConfig`` from the installed ``tensorflow-serving-api``; ``MonitoringConfig`` and
``BatchingParameters`` from TF Serving's modules when importable, else from schemas built
here with the field names/numbers/types of TF Serving 2.20.0's
``tensorflow_serving/config/monitoring_config.proto`` and
``tensorflow_serving/servables/tensorflow/session_bundle_config.proto`` (the pip package
``tensorflow-serving-api`` ships neither module).
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

ROOT = Path(__file__).resolve().parents[1]
SERVING = ROOT / "serving"
CONFIG_DIR = "/etc/tfsoft-serving"
CONFIG_FILES = ("models.config", "batching_parameters.txt", "monitoring.config")
MODEL_NAME = "tfsoft"
BASE_PATH = "/models/tfsoft"
GRPC_PORT, REST_PORT = 8500, 8501
HOST_PORTS = {"tfserving": (8501, 8500), "tfserving-scann": (8601, 8600)}  # (REST, gRPC)
SCANN_OPS = ("TensorsToScann", "ScannSearchBatched", "ScannSearch", "ScannToTensors", "ScannCreateSearcher")


# ---------------------------------------------------------------------------------------
# proto schemas
# ---------------------------------------------------------------------------------------

def _schema_pool():
    """MonitoringConfig / BatchingParameters as in TF Serving 2.20.0, in a private pool."""
    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    fd = descriptor_pb2.FileDescriptorProto(name="tfsoft_test/serving_schemas.proto", package="tensorflow.serving",
                                            syntax="proto3", dependency=["google/protobuf/wrappers.proto"])

    def message(name, fields):
        msg = fd.message_type.add(name=name)
        for field_name, number, ftype, type_name, label in fields:
            field = msg.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    msg_t, int64v, strv, boolv = F.TYPE_MESSAGE, ".google.protobuf.Int64Value", ".google.protobuf.StringValue", \
        ".google.protobuf.BoolValue"
    message("PrometheusConfig", [("enable", 1, F.TYPE_BOOL, None, opt), ("path", 2, F.TYPE_STRING, None, opt)])
    message("MonitoringConfig", [("prometheus_config", 1, msg_t, ".tensorflow.serving.PrometheusConfig", opt)])
    message("BatchingParameters", [
        ("max_batch_size", 1, msg_t, int64v, opt),
        ("batch_timeout_micros", 2, msg_t, int64v, opt),
        ("max_enqueued_batches", 3, msg_t, int64v, opt),
        ("num_batch_threads", 4, msg_t, int64v, opt),
        ("thread_pool_name", 5, msg_t, strv, opt),
        ("allowed_batch_sizes", 6, F.TYPE_INT64, None, rep),
        ("pad_variable_length_inputs", 7, F.TYPE_BOOL, None, opt),
        ("enable_large_batch_splitting", 8, msg_t, boolv, opt),
        ("max_execution_batch_size", 9, msg_t, int64v, opt),
    ])
    pool.Add(fd)
    return pool


def _message_class(module: str, name: str):
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except ImportError:
        return message_factory.GetMessageClass(_schema_pool().FindMessageTypeByName(f"tensorflow.serving.{name}"))


MonitoringConfig = _message_class("tensorflow_serving.config.monitoring_config_pb2", "MonitoringConfig")
BatchingParameters = _message_class("tensorflow_serving.servables.tensorflow.session_bundle_config_pb2",
                                    "BatchingParameters")


def parse(path: Path, cls):
    return text_format.Parse(path.read_text(encoding="utf-8"), cls())


# ---------------------------------------------------------------------------------------
# Dockerfile / compose helpers
# ---------------------------------------------------------------------------------------

def dockerfile_stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{stage name: [(INSTRUCTION, arguments), ...]}; FROM lines start a stage."""
    logical, pending = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: dict[str, list] = {}
    current = "<global>"
    stages[current] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            current = match.group(2) or match.group(1)
            stages[current] = [("FROM", match.group(1))]
        else:
            stages[current].append((instruction, args.strip()))
    return stages


def instruction_args(stage, instruction):
    return [args for name, args in stage if name == instruction]


def exec_form(stage, instruction):
    (args,) = instruction_args(stage, instruction)[-1:]
    return json.loads(args)


def global_args(stages) -> dict[str, str]:
    out = {}
    for args in instruction_args(stages["<global>"], "ARG"):
        name, _, value = args.partition("=")
        out[name] = value
    return out


def stage_args(stage) -> dict[str, str]:
    out = {}
    for args in instruction_args(stage, "ARG"):
        name, _, value = args.partition("=")
        out[name] = value.strip('"')
    return out


def resolve(text: str, variables: dict[str, str]) -> str:
    """${VAR} / ${VAR:-default} (Dockerfile ARG and compose interpolation, the forms used)."""
    def sub(match):
        name, default = match.group(1), match.group(3)
        value = variables.get(name)
        return value if value not in (None, "") else (default or "")
    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", sub, text)


def flags(argv) -> dict[str, str]:
    out = {}
    for arg in argv:
        assert arg.startswith("--") and "=" in arg, arg
        name, _, value = arg[2:].partition("=")
        assert name not in out, f"--{name} given twice"
        out[name] = value
    return out


def copied_configs(stage) -> set[str]:
    """Container paths of the serving/*.config files a stage COPYs to CONFIG_DIR."""
    out = set()
    for args in instruction_args(stage, "COPY"):
        parts = shlex.split(args)
        if parts[-1].rstrip("/") == CONFIG_DIR:
            for src in parts[:-1]:
                assert (ROOT / src).is_file(), f"COPY source {src} is missing"
                out.add(f"{CONFIG_DIR}/{Path(src).name}")
    return out


@pytest.fixture(scope="module")
def root_stages():
    return dockerfile_stages(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def scann_stages():
    return dockerfile_stages(SERVING / "Dockerfile.scann")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((SERVING / "docker-compose.yml").read_text(encoding="utf-8"))


def serving_stages(root_stages, scann_stages):
    return {"serving": root_stages["serving"], "serving-scann": root_stages["serving-scann"],
            "Dockerfile.scann:serving-scann": scann_stages["serving-scann"]}


# ---------------------------------------------------------------------------------------
# text protos
# ---------------------------------------------------------------------------------------

def test_models_config_parses_and_serves_tfsoft():
    config = parse(SERVING / "models.config", model_server_config_pb2.ModelServerConfig)
    (model,) = config.model_config_list.config
    assert model.name == MODEL_NAME
    assert model.base_path == BASE_PATH
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
    assert model.model_version_policy.latest.num_versions == 2
    # Labels must name loaded versions; export versions are not known in advance, so none
    # are active (the commented example below shows how).
    assert not model.version_labels


def test_models_config_label_example_is_valid():
    """The commented `specific` + `version_labels` example parses, and each label names a
    version that policy loads (a label on an unloaded version is rejected by the server
    without --allow_version_labels_for_unavailable_models)."""
    lines = (SERVING / "models.config").read_text(encoding="utf-8").splitlines()
    example = [line.lstrip("#").strip() for line in lines
               if re.match(r"#\s+(model_version_policy|version_labels)\s*\{", line)]
    assert len(example) == 3, example
    model = text_format.Parse("\n".join(example), model_server_config_pb2.ModelConfig())
    versions = set(model.model_version_policy.specific.versions)
    assert dict(model.version_labels) and set(model.version_labels) == {"stable", "canary"}
    assert set(model.version_labels.values()) <= versions


def test_monitoring_config_enables_prometheus():
    config = parse(SERVING / "monitoring.config", MonitoringConfig)
    assert config.prometheus_config.enable
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_batching_parameters_are_sane_for_cpu():
    params = parse(SERVING / "batching_parameters.txt", BatchingParameters)
    for field in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        assert params.HasField(field), field
    assert params.max_batch_size.value > 0
    assert params.num_batch_threads.value > 0
    assert params.max_enqueued_batches.value > 0
    assert 0 <= params.batch_timeout_micros.value <= 10_000  # the batching guide's CPU range
    # Padding would fill short history rows with their first element, a real item id.
    assert not params.pad_variable_length_inputs
    if params.allowed_batch_sizes:
        assert list(params.allowed_batch_sizes) == sorted(params.allowed_batch_sizes)
        assert params.allowed_batch_sizes[-1] == params.max_batch_size.value


# ---------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------

def test_root_dockerfile_stages(root_stages):
    for name in ("trainer", "serving", "serving-scann"):
        assert name in root_stages, name
    trainer = root_stages["trainer"]
    assert exec_form(trainer, "ENTRYPOINT") == ["tfsoft"]
    assert any("pip install ." in run for run in instruction_args(trainer, "RUN"))
    args = global_args(root_stages)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    # The serving stage copies no model, only the server config.
    assert copied_configs(root_stages["serving"]) == {f"{CONFIG_DIR}/{name}" for name in CONFIG_FILES}
    assert len(instruction_args(root_stages["serving"], "COPY")) == 1


def test_tf_serving_version_matches_training_stack(root_stages, scann_stages):
    """tensorflow/serving tag == TF Serving tag built with ScaNN == installed TF / API (x.y)."""
    root_args, scann_args = global_args(root_stages), global_args(scann_stages)
    image = root_args["TF_SERVING_IMAGE"]
    assert image.startswith("tensorflow/serving:")
    tag = image.split(":", 1)[1]
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), "pin a release tag, not latest/nightly"
    assert scann_args["TF_SERVING_VERSION"] == tag
    assert resolve(scann_args["TF_SERVING_DEVEL_IMAGE"], scann_args) == f"tensorflow/serving:{tag}-devel"
    major_minor = ".".join(tag.split(".")[:2])
    for dist in ("tensorflow", "tensorflow-serving-api"):
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        assert installed.startswith(major_minor + "."), (dist, installed, tag)
    assert f"tensorflow=={major_minor}.*" in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    # Both runtime images use the same pinned Ubuntu base as TF Serving's release image.
    assert root_args["RUNTIME_BASE_IMAGE"] == scann_args["RUNTIME_BASE_IMAGE"]
    assert "@sha256:" in root_args["RUNTIME_BASE_IMAGE"]


def test_scann_dockerfile_pins_and_links_scann(scann_stages, root_stages):
    build = scann_stages["scann-build"]
    args = stage_args(build)
    assert re.fullmatch(r"[0-9a-f]{40}", args["SCANN_COMMIT"])
    try:
        assert args["SCANN_VERSION"] == importlib.metadata.version("scann")
    except importlib.metadata.PackageNotFoundError:
        pass
    assert args["SCANN_VERSION"] in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    runs = "\n".join(instruction_args(build, "RUN"))
    for target in ("@com_google_scann//scann/scann_ops/cc:scann_ops",
                   "@com_google_scann//scann/scann_ops/cc:scann_ops_kernels"):
        assert target in runs
    assert "SUPPORTED_TENSORFLOW_OPS" in (SERVING / "Dockerfile.scann").read_text(encoding="utf-8")
    assert "tensorflow_serving/model_servers:tensorflow_model_server" in runs
    assert "--copt=-mavx2" in args["TF_SERVING_BUILD_OPTIONS"]
    # The op names the image is checked for are those of the installed ScaNN's TF ops.
    for op in SCANN_OPS:
        assert op in runs
    try:
        import scann
    except ImportError:
        scann = None
    if scann is not None:
        library = Path(scann.__file__).parent / "scann_ops" / "cc" / "_scann_ops.so"
        if library.is_file():
            blob = library.read_bytes()
            for op in SCANN_OPS:
                assert f"Scann>{op}".encode() in blob, op
    # Runtime stages take the binary from the build stage / build image.
    runtime = scann_stages["serving-scann"]
    assert any(args.startswith("--from=scann-build /usr/local/bin/tensorflow_model_server")
               for args in instruction_args(runtime, "COPY"))
    assert any(args.startswith("--from=scann-binary /usr/local/bin/tensorflow_model_server")
               for args in instruction_args(root_stages["serving-scann"], "COPY"))
    assert root_stages["scann-binary"][0] == ("FROM", "${SCANN_BUILD_IMAGE}")
    assert "scann" in global_args(root_stages)["SCANN_BUILD_IMAGE"]


def test_serving_images_share_config_entrypoint_and_ports(root_stages, scann_stages):
    stages = serving_stages(root_stages, scann_stages)
    commands = {}
    for name, stage in stages.items():
        assert exec_form(stage, "ENTRYPOINT") == ["/usr/bin/tensorflow_model_server"], name
        assert copied_configs(stage) == {f"{CONFIG_DIR}/{file}" for file in CONFIG_FILES}, name
        assert instruction_args(stage, "EXPOSE") == [f"{GRPC_PORT} {REST_PORT}"], name
        commands[name] = flags(exec_form(stage, "CMD"))
    first = next(iter(commands.values()))
    assert all(command == first for command in commands.values()), commands
    assert first["port"] == str(GRPC_PORT) and first["rest_api_port"] == str(REST_PORT)
    assert first["model_config_file"] == f"{CONFIG_DIR}/models.config"
    assert first["monitoring_config_file"] == f"{CONFIG_DIR}/monitoring.config"
    # Default CMD: no batching, hence no batching file (the server refuses the file alone).
    assert "batching_parameters_file" not in first and first.get("enable_batching", "false") == "false"


# ---------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------

def compose_flags(service, env):
    return flags(resolve(arg, env) for arg in service["command"])


def test_compose_services_ports_and_builds(compose):
    services = compose["services"]
    assert set(services) == set(HOST_PORTS)
    for name, (rest, grpc) in HOST_PORTS.items():
        service = services[name]
        assert sorted(service["ports"]) == sorted([f"{rest}:{REST_PORT}", f"{grpc}:{GRPC_PORT}"]), name
        build = service["build"]
        dockerfile = (SERVING / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.is_file(), dockerfile
        assert (SERVING / build["context"]).resolve() == ROOT  # COPY serving/... needs the repo root
        assert build["target"] in dockerfile_stages(dockerfile), (name, build["target"])
        (volume,) = service["volumes"]
        source, target, mode = volume.rsplit(":", 2)
        assert target == BASE_PATH and mode == "ro"
        assert f"/v1/models/{MODEL_NAME}" in " ".join(service["healthcheck"]["test"])
        assert f"/dev/tcp/127.0.0.1/{REST_PORT}" in " ".join(service["healthcheck"]["test"])
    assert services["tfserving"]["build"]["target"] == "serving"
    assert services["tfserving-scann"]["build"]["dockerfile"] == "serving/Dockerfile.scann"
    # The two servers serve different exports (a ScaNN export cannot load in stock TF Serving).
    assert services["tfserving"]["volumes"] != services["tfserving-scann"]["volumes"]


def test_compose_flags_match_images_and_config(compose, root_stages, scann_stages):
    image_cmd = flags(exec_form(root_stages["serving"], "CMD"))
    copied = copied_configs(root_stages["serving"]) & copied_configs(scann_stages["serving-scann"])
    for name, service in compose["services"].items():
        default = compose_flags(service, env={})
        for flag in ("port", "rest_api_port", "model_config_file", "model_config_file_poll_wait_seconds",
                     "file_system_poll_wait_seconds", "monitoring_config_file", "enable_model_warmup"):
            assert default[flag] == image_cmd[flag], (name, flag)
        assert default["enable_model_warmup"] == "true"
        assert int(default["file_system_poll_wait_seconds"]) >= 1
        assert int(default["model_config_file_poll_wait_seconds"]) >= 1
        # Off by default, and then the file flag must be empty or the server will not start.
        assert default["enable_batching"] == "false" and default["batching_parameters_file"] == ""
        enabled = compose_flags(service, env={"TFSOFT_ENABLE_BATCHING": "true",
                                              "TFSOFT_BATCHING_PARAMETERS_FILE":
                                                  f"{CONFIG_DIR}/batching_parameters.txt"})
        assert enabled["enable_batching"] == "true"
        for flag in ("model_config_file", "monitoring_config_file", "batching_parameters_file"):
            assert enabled[flag] in copied, (name, flag, enabled[flag])
    # The documented enable line names the same variables.
    text = (SERVING / "docker-compose.yml").read_text(encoding="utf-8")
    assert f"TFSOFT_BATCHING_PARAMETERS_FILE={CONFIG_DIR}/batching_parameters.txt" in text


def test_readme_documents_what_the_files_do(compose):
    readme = (SERVING / "README.md").read_text(encoding="utf-8")
    for needle in ("docker build", "docker compose", "serving/Dockerfile.scann", ":predict",
                   '"instances"', '"inputs"', f"/v1/models/{MODEL_NAME}/metadata",
                   "--allow_version_labels_for_unavailable_models", "tf_serving_warmup_requests",
                   "tensorflow/recommenders/issues/216", "/monitoring/prometheus/metrics"):
        assert needle in readme, needle
    for name, (rest, grpc) in HOST_PORTS.items():
        assert f"localhost:{rest}" in readme, name
    for service in compose["services"].values():
        assert service["image"] in readme, service["image"]
