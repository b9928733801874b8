"""docker-compose.yml, server/Dockerfile and deploy/kubernetes/ without Docker or a cluster.

What can be checked here is checked: every file parses and passes its schema
(the compose spec; Kubernetes' own OpenAPI schemas, strict, bundled by
kubernetes-validate), every image is pinned, and the files agree with the code:
SENTIMENT_* names and values build the settings objects, ports, volume paths,
the model name and the model repository layout; Triton polls the repository so
versions roll, the admin port is never published, and the compose and kubectl
commands docs/models.md gives parse with the images' entrypoints. Last, the
front-end image's command and environment run here as a plain process against
the embedded Triton.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.resources
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from packaging.requirements import Requirement
from sentiment_server.cli import build_parser
from sentiment_server.model_artifact import INFO_FILE, version_dir
from sentiment_server.settings import (
    AdminSettings,
    ExportSettings,
    ServeSettings,
    VersionsSettings,
    env_name,
    settings_from,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "server" / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
MODELS_DOC = ROOT / "docs" / "models.md"
OVERLAYS = [KUBERNETES / "base", *sorted(p for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())]
# The oldest Kubernetes release the manifests promise to work on (gRPC probes are GA
# since 1.27), and the newest one kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
HEAVY = {"torch", "transformers"}


# --------------------------------------------------------------------------- helpers


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME-default}, applied through a document."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, colon, default = match.group(1), match.group(2), match.group(3)
        if default is None:
            return env.get(name, "")
        current = env.get(name)
        return default if current is None or (colon and not current) else current

    return re.sub(r"\$\{(\w+)(?:(:?)-([^}]*))?\}", one, value)


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with `env` (default: nothing set)."""
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env or {})  # type: ignore[no-any-return]


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in service.get("environment", {}).items()}


@dataclasses.dataclass
class Stage:
    base: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    instructions: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [rest for kw, rest in self.instructions if kw == keyword]
        return found[-1] if found else None

    def exec_form(self, keyword: str) -> list[str]:
        rest = self.last(keyword)
        return json.loads(rest) if rest else []


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, Stage]:
    """The stages of a Dockerfile: base image (ARG defaults applied), ENV, instructions."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            stage = stages.setdefault(words[2] if len(words) > 2 else str(len(stages)), Stage(base))
        elif stage is not None:
            stage.instructions.append((keyword, rest))
            if keyword == "ENV":
                stage.env.update(word.partition("=")[::2] for word in shlex.split(rest))
    return stages


KUSTOMIZE = ["kustomize", "build"] if shutil.which("kustomize") else ["kubectl", "kustomize"]
CAN_RENDER = shutil.which(KUSTOMIZE[0]) is not None


@functools.cache
def _render(directory: Path) -> str:
    return subprocess.run([*KUSTOMIZE, str(directory)], check=True, capture_output=True, text=True, timeout=60).stdout


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """A kustomization rendered by kustomize, or by the copy built into kubectl."""
    if not CAN_RENDER:
        pytest.skip("neither kustomize nor kubectl is installed: cannot render the kustomizations")
    return [doc for doc in yaml.safe_load_all(_render(directory)) if doc]


def rendered() -> list[dict[str, Any]]:
    """Every overlay's documents, or none where nothing can render them."""
    return [doc for d in OVERLAYS for doc in kustomize(d)] if CAN_RENDER else []


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def pod_containers(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            pod = pod_spec(doc)
            yield from pod["containers"] + pod.get("initContainers", [])


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def container(pod_spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def pod_env(docs: list[dict[str, Any]], c: Mapping[str, Any]) -> dict[str, str]:
    """A container's literal environment: envFrom ConfigMaps, then env values."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(find(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


def check_settings(cls: type[Any], env: Mapping[str, str]) -> Any:
    """Every SENTIMENT_* name is a field of `cls` and the values parse, as at start-up."""
    known = {env_name(f.name) for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in env if k.startswith("SENTIMENT_") and k not in known)
    assert not unknown, f"not settings of {cls.__name__}: {unknown}"
    return settings_from(cls, env=env)


def flags(command: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in command if arg.startswith("--"))


def is_pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest") and "@" not in image


def server_version() -> str:
    return importlib.metadata.version("sentiment-server")


def check_triton_polls(triton_flags: Mapping[str, str]) -> None:
    """Triton follows the repository: a changed config.pbtxt (version_policy) is reloaded, so versions roll."""
    assert triton_flags["model-control-mode"] == "poll"
    assert 0 < int(triton_flags["repository-poll-secs"]) <= 10


# The settings object of each sentiment-server command the docs run in a container.
COMMAND_SETTINGS: dict[str, type[Any]] = {
    "export": ExportSettings,
    "versions": VersionsSettings,
    "serve": ServeSettings,
    "rollout": AdminSettings,
    "rollback": AdminSettings,
}


def check_container_command(argv: list[str], env: Mapping[str, str]) -> Any:
    """A command line as a container runs it: sentiment-server's settings, or a sentiment-client subcommand."""
    from sentiment_client.cli import _parser as client_parser

    if argv[0] == "sentiment-client":
        return client_parser().parse_args(argv[1:])
    assert argv[0] == "sentiment-server", argv
    args = build_parser().parse_args(argv[1:])
    return settings_from(COMMAND_SETTINGS[args.command], args, env)


def doc_commands(prefix: str, path: Path = MODELS_DOC) -> list[list[str]]:
    """The commands in `path` (code block lines, inline code) that start with `prefix`, split as a shell would."""
    found = []
    for line in path.read_text().splitlines():
        spans = [line.strip()] if line.startswith("    ") else re.findall(r"`([^`]+)`", line)
        found += [shlex.split(text, comments=True) for text in spans if text.startswith(prefix)]
    return found


# --------------------------------------------------------------------------- compose


def test_compose_passes_the_compose_spec() -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    for document in (yaml.safe_load(COMPOSE_FILE.read_text()), compose(), compose({"SENTIMENT_DTYPE": "fp32"})):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
        assert not errors, errors
    bad = {"services": {"frontend": {"image": "x:1", "ports": "50051"}}}
    assert list(validator.iter_errors(bad)), "the compose schema accepts anything"


def test_compose_shape() -> None:
    services = compose()["services"]
    assert set(services) == {"export", "triton", "frontend"}
    assert [name for name, s in services.items() if "ports" in s] == ["frontend"], "only the front-end publishes"
    for name in ("export", "triton"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] for d in devices), f"{name} reserves no GPU"
    assert services["export"]["restart"] == "no"
    assert services["triton"]["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert services["frontend"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert services["triton"]["healthcheck"]["test"][0] == "CMD"


def test_compose_agrees_with_the_code() -> None:
    services = compose()["services"]
    export = check_settings(ExportSettings, service_env(services["export"]))
    serve = check_settings(ServeSettings, service_env(services["frontend"]))
    assert (export.backend, export.device, export.dtype) == ("pytorch", "gpu", "fp16")
    assert export.model_name == serve.model_name == "sentiment"
    assert serve.host == "0.0.0.0", "the front-end must listen on the container's network"

    # The same named volume, at the paths each side is told about; read-only after export.
    volume = "model-repository"
    mounts = {name: [v for v in s["volumes"] if v.startswith(volume + ":")] for name, s in services.items()}
    assert mounts["export"] == [f"{volume}:{export.model_repository}"]
    assert mounts["frontend"] == [f"{volume}:{serve.model_repository}:ro"]
    triton = services["triton"]
    triton_flags = flags(triton["command"])
    assert mounts["triton"] == [f"{volume}:{triton_flags['model-repository']}:ro"]
    check_triton_polls(triton_flags)
    assert not serve.triton_model_control, "a polling Triton refuses loads: the front-end follows it"
    assert volume in compose()["volumes"]

    # The front-end reaches Triton's gRPC port by service name; the health check uses the HTTP one.
    assert serve.triton_url == f"triton:{triton_flags['grpc-port']}"
    assert triton["expose"] == [triton_flags["grpc-port"]]
    health = " ".join(triton["healthcheck"]["test"])
    assert f"http://{triton_flags['http-address']}:{triton_flags['http-port']}/v2/health/ready" in health

    # Published port -> the port the front-end binds; the stop grace covers the drain.
    [port] = services["frontend"]["ports"]
    assert port["target"] == serve.port
    assert port["host_ip"] == "127.0.0.1", "published on the host's loopback unless asked otherwise"
    # The admin port (rollout, rollback) stays on the container's loopback: published nowhere.
    assert serve.admin_port not in (-1, serve.port)
    for service in services.values():
        assert str(serve.admin_port) not in map(str, service.get("expose", []))
        for published in service.get("ports", []):
            assert serve.admin_port not in (published.get("target"), published.get("published")), published
    assert int(services["frontend"]["stop_grace_period"].removesuffix("s")) > serve.grace_s

    # Overrides reach the settings (e.g. SENTIMENT_MODEL_NAME=emotion3 for both sides).
    changed = compose({"SENTIMENT_MODEL_NAME": "emotion3", "SENTIMENT_DTYPE": "bf16"})["services"]
    assert settings_from(ExportSettings, env=service_env(changed["export"])).model_name == "emotion3"
    assert settings_from(ServeSettings, env=service_env(changed["frontend"])).model_name == "emotion3"


def test_compose_rollout_commands_in_the_docs_work() -> None:
    """docs/models.md's compose steps, as `docker compose run/exec` hands them to the images' entrypoints."""
    stages = dockerfile_stages()
    services = compose()["services"]
    runs = doc_commands("docker compose run ")
    execs = doc_commands("docker compose exec ")
    assert any("versions" in r for r in runs) and any("rollout" in e for e in execs), (runs, execs)
    for words in runs:
        words = words[3:]
        env = {**stages["export"].env, **service_env(services["export"])}
        while words[0].startswith("-"):  # run's own options: --rm, -e NAME=VALUE, -v SRC:DST
            option = words.pop(0)
            if option in ("-e", "-v"):
                value = words.pop(0)
                if option == "-e":
                    name, _, setting = value.partition("=")
                    env[name] = setting
        service, args = words[0], words[1:]
        assert service == "export", "only the export service mounts the repository writable"
        stage = stages[services[service]["build"]["target"]]
        check_container_command(stage.exec_form("ENTRYPOINT") + (args or stage.exec_form("CMD")), env)
    for words in execs:
        service, argv = words[3], words[4:]
        assert service == "frontend"
        env = {**stages["frontend"].env, **service_env(services[service])}
        settings = check_container_command(argv, env)
        if isinstance(settings, AdminSettings):  # the front-end's own admin port, on its loopback
            serve = settings_from(ServeSettings, env=env)
            assert settings.admin_url == f"127.0.0.1:{serve.admin_port}"
            assert settings.api_key == serve.api_key


# --------------------------------------------------------------------------- images


def test_dockerfile_agrees_with_the_code() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "frontend", "a plain `docker build` must give the front-end image"
    frontend, export = stages["frontend"], stages["export"]
    assert frontend.last("USER") and export.last("USER"), "both images run as non-root"
    assert not frontend.last("USER").startswith(("root", "0"))  # type: ignore[union-attr]

    serve = check_settings(ServeSettings, {k: v for k, v in frontend.env.items() if k.startswith("SENTIMENT_")})
    assert frontend.exec_form("ENTRYPOINT") + frontend.exec_form("CMD") == ["sentiment-server", "serve"]
    assert frontend.last("EXPOSE") == str(serve.port)
    assert str(serve.admin_port) not in (frontend.last("EXPOSE") or "").split(), "the admin port is loopback only"
    assert serve.host == "0.0.0.0"
    exported = check_settings(ExportSettings, {k: v for k, v in export.env.items() if k.startswith("SENTIMENT_")})
    assert exported.backend == "pytorch"
    assert export.exec_form("ENTRYPOINT") + export.exec_form("CMD") == ["sentiment-server", "export"]

    # The export stage pins what constraints.txt pins (it cannot use the file: torch is the base image's).
    constraints = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    pins = re.findall(r'"([\w.-]+)==([\w.]+)"', " ".join(rest for _, rest in export.instructions))
    assert pins and all(constraints[name] == version for name, version in pins), pins


def test_images_are_pinned_and_match() -> None:
    stages = dockerfile_stages()
    services = compose()["services"]
    images = [s.base for s in stages.values() if s.base not in stages]
    images += [s["image"] for s in services.values()]
    images += [c["image"] for c in pod_containers(rendered())]
    unpinned = sorted({i for i in images if not is_pinned(i)})
    assert not unpinned, f"pin these images by an exact tag: {unpinned}"

    # Built images carry the package version; Triton and the export's PyTorch are one NGC release,
    # so model.pt is traced by the libtorch that Triton loads it with.
    for name in ("export", "frontend"):
        assert services[name]["image"] == f"sentiment-{name}:{server_version()}"
        assert services[name]["build"]["target"] == name
    triton_release = services["triton"]["image"].rpartition(":")[2].removesuffix("-py3")
    assert stages["export"].base == f"nvcr.io/nvidia/pytorch:{triton_release}-py3"


def test_frontend_image_installs_no_torch() -> None:
    """What `pip install ./client ./server` pulls in (the front-end image's build stage)."""
    seen: set[str] = set()
    todo = ["sentiment-server"]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    assert not seen & HEAVY, f"the front-end image would contain {sorted(seen & HEAVY)}"
    assert {"grpcio", "protobuf", "tokenizers", "numpy", "tritonclient"} <= seen


def test_dockerignore_keeps_the_build_inputs() -> None:
    kept = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    assert all((ROOT / path).exists() for path in kept), kept
    for package in ("server/sentiment_server", "client/sentiment", "client/sentiment_client"):
        assert package in kept


def test_triton_flags_exist() -> None:
    """Every Triton flag used in compose and Kubernetes is one `tritonserver --help` lists."""
    try:
        from sentiment_server.backend.triton_distribution import find_distribution

        dist = find_distribution()
    except Exception as exc:  # the embedded extra is optional
        pytest.skip(f"no tritonserver binary here: {exc}")
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(map(str, dist.libs))}
    help_text = subprocess.run([str(dist.binary), "--help"], capture_output=True, text=True, env=env, timeout=60)
    known = set(re.findall(r"^\s+--([\w-]+)", help_text.stdout + help_text.stderr, re.M))
    assert {"model-repository", "grpc-port"} <= known
    commands = [compose()["services"]["triton"]["command"]]
    commands += [c["command"] for c in pod_containers(rendered()) if c["name"] == "triton"]
    for command in commands:
        assert command[0] == "tritonserver"
        assert set(flags(command)) <= known, set(flags(command)) - known


# --------------------------------------------------------------------------- kubernetes


def raw_manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBERNETES.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                yield path, doc


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_pass_kubernetes_schemas(version: str) -> None:
    documents = [(str(path.relative_to(ROOT)), doc) for path, doc in raw_manifests()]
    documents += [("rendered overlays", doc) for doc in rendered()]
    assert len(documents) > 10
    for where, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: unknown fields fail
        kubernetes_validate.validate({**documents[0][1], "spek": {}}, version, strict=True)


def test_policy_api_versions() -> None:
    kinds = {(doc["kind"], doc["apiVersion"]) for _, doc in raw_manifests()}
    assert ("HorizontalPodAutoscaler", "autoscaling/v2") in kinds
    assert ("PodDisruptionBudget", "policy/v1") in kinds
    assert not {k for k in kinds if k[0] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")} - {
        ("HorizontalPodAutoscaler", "autoscaling/v2"),
        ("PodDisruptionBudget", "policy/v1"),
    }


@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda p: p.name)
def test_kubernetes_agrees_with_the_code(directory: Path) -> None:
    docs = kustomize(directory)
    triton_set = find(docs, "StatefulSet", "triton")
    triton_pod = triton_set["spec"]["template"]["spec"]
    triton = container(triton_pod, "triton")
    deployment = find(docs, "Deployment", "sentiment-frontend")
    frontend_pod = deployment["spec"]["template"]["spec"]
    frontend = container(frontend_pod, "frontend")
    export_pod = find(docs, "Job", "sentiment-export")["spec"]["template"]["spec"]
    export = container(export_pod, "export")

    serve = check_settings(ServeSettings, pod_env(docs, frontend))
    exported = check_settings(ExportSettings, pod_env(docs, export))
    assert serve.model_name == exported.model_name
    assert (exported.backend, exported.device) == ("pytorch", "gpu")
    assert serve.host == "0.0.0.0"

    # Triton: a GPU per pod, gRPC health probes, model control off.
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    triton_flags = flags(triton["command"])
    grpc_port = int(triton_flags["grpc-port"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert triton[probe]["grpc"]["port"] == grpc_port
    check_triton_polls(triton_flags)
    assert not serve.triton_model_control, "a polling Triton refuses loads: the front-end follows it"

    # Client-side balancing: the front-end lists every Triton pod by its stable name
    # through the headless Service the StatefulSet governs.
    headless = find(docs, "Service", triton_set["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc"] == [grpc_port]
    replicas = triton_set["spec"]["replicas"]
    endpoints = [u.strip() for u in serve.triton_url.split(",")]
    assert endpoints == [f"triton-{i}.{headless['metadata']['name']}:{grpc_port}" for i in range(replicas)]

    # The front-end: gRPC readiness on the port it binds, resources for the HPA, HPA + PDB on it.
    assert frontend["readinessProbe"]["grpc"]["port"] == serve.port
    assert {p["containerPort"] for p in frontend["ports"]} == {serve.port, serve.metrics_port}
    # The admin port (rollout, rollback) is each pod's loopback: no container port, no Service.
    assert serve.admin_port not in (-1, serve.port, serve.metrics_port)
    for svc in (d for d in docs if d["kind"] == "Service"):
        for p in svc["spec"]["ports"]:
            assert serve.admin_port not in (p["port"], p.get("targetPort")), svc["metadata"]["name"]
    assert {"cpu", "memory"} <= set(frontend["resources"]["requests"])
    [workers] = [e["valueFrom"]["resourceFieldRef"] for e in frontend["env"] if e["name"] == "SENTIMENT_WORKERS"]
    assert (workers["containerName"], workers["resource"]) == ("frontend", "requests.cpu")  # one per core it gets
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = find(docs, "HorizontalPodAutoscaler", "sentiment-frontend")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = find(docs, "PodDisruptionBudget", "sentiment-frontend")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = find(docs, "Service", "sentiment")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["port"] == serve.port

    # One claim, mounted where each side is told the repository is; read-only after the export.
    def mount(pod: Mapping[str, Any], c: Mapping[str, Any]) -> tuple[str, str, bool]:
        [m] = [m for m in c["volumeMounts"] if m["name"] == "model-repository"]
        [v] = [v for v in pod["volumes"] if v["name"] == "model-repository"]
        return v["persistentVolumeClaim"]["claimName"], m["mountPath"], m.get("readOnly", False)

    # The versions step: a CronJob that never runs by itself, the front-end image, the repository writable.
    cron = find(docs, "CronJob", "sentiment-versions")
    assert cron["spec"]["suspend"] is True
    versions_pod = pod_spec(cron)
    [versions] = versions_pod["containers"]
    assert versions["image"] == frontend["image"], "no torch and no GPU for rewriting config.pbtxt"
    assert "nvidia.com/gpu" not in versions["resources"].get("limits", {})
    listed = settings_from(VersionsSettings, build_parser().parse_args(versions["args"]), pod_env(docs, versions))
    assert listed.model_name == serve.model_name
    assert listed.serve == "", "left alone it only lists the versions"

    claim = mount(export_pod, export)[0]
    assert mount(export_pod, export) == (claim, str(exported.model_repository), False)
    assert mount(versions_pod, versions) == (claim, str(listed.model_repository), False)
    assert mount(frontend_pod, frontend) == (claim, str(serve.model_repository), True)
    assert mount(triton_pod, triton) == (claim, triton_flags["model-repository"], True)
    find(docs, "PersistentVolumeClaim", claim)

    # Both wait for the file the export writes last, at the path model_artifact defines.
    expected = str(version_dir(serve.model_repository, "$SENTIMENT_MODEL_NAME") / INFO_FILE)
    for pod in (triton_pod, frontend_pod):
        [wait] = pod["initContainers"]
        assert expected in wait["command"][-1]
        assert "SENTIMENT_MODEL_NAME" in pod_env(docs, wait)


def test_kubernetes_rollout_commands_in_the_docs_work() -> None:
    """docs/models.md's kubectl steps name what the production overlay renders, and their commands parse."""
    overlay = KUBERNETES / "overlays" / "production"
    docs = kustomize(overlay)
    namespace = yaml.safe_load((overlay / "kustomization.yaml").read_text())["namespace"]
    deployment = find(docs, "Deployment", "sentiment-frontend")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    commands = doc_commands("kubectl ")
    verbs = set()
    for words in commands:
        assert words[1:3] == ["-n", namespace] or words[1:3] == ["apply", "-k"], words
        verb = words[3] if words[1] == "-n" else words[1]
        verbs.add(verb)
        if verb == "apply":
            assert (ROOT / words[3]).resolve() == overlay.resolve()
        elif verb == "set":  # set env cronjob/NAME NAME=VALUE...: settings of the versions command
            assert words[4:5] == ["env"] and words[5].startswith("cronjob/"), words
            cron = find(docs, "CronJob", words[5].removeprefix("cronjob/"))
            [c] = pod_spec(cron)["containers"]
            env = {**pod_env(docs, c), **dict(w.split("=", 1) for w in words[6:])}
            check_settings(VersionsSettings, {k: v for k, v in env.items() if k.startswith("SENTIMENT_")})
            check_container_command(["sentiment-server", *c["args"]], env)
        elif verb == "create":  # create job --from=cronjob/NAME JOB
            source = words[5].removeprefix("--from=cronjob/")
            find(docs, "CronJob", source)
        elif verb == "exec":  # exec POD -c frontend -- ARGV, in the front-end container's environment
            container_name, argv = words[6], words[words.index("--") + 1 :]
            c = container(deployment["spec"]["template"]["spec"], container_name)
            settings = check_container_command(argv, pod_env(docs, c))
            if isinstance(settings, AdminSettings):
                serve = settings_from(ServeSettings, env=pod_env(docs, c))
                assert settings.admin_url == f"127.0.0.1:{serve.admin_port}"
        elif verb == "delete":
            assert words[4:6] == ["job", "sentiment-export"]
            find(docs, "Job", "sentiment-export")
        elif verb == "rollout":
            assert words[-1] == f"deployment/{deployment['metadata']['name']}"
    assert {"apply", "set", "create", "exec", "wait"} <= verbs, verbs
    # The front-end pods, listed by a label of theirs (the loop over replicas).
    selectors = re.findall(r"get pods -l (\S+)", MODELS_DOC.read_text())
    assert selectors and all(dict([s.split("=", 1)]).items() <= labels.items() for s in selectors), selectors
    jobs = {w for words in commands for w in words if w.startswith("job/")}
    created = {words[-1] for words in commands if "create" in words}
    assert {j.removeprefix("job/") for j in jobs} <= created | {"sentiment-export"}, jobs


@pytest.mark.triton
def test_triton_answers_the_kubernetes_grpc_probe(triton: Any) -> None:
    """Triton's own grpc.health.v1 (what a `grpc:` probe calls, service ""): SERVING once its models are ready."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(triton.grpc_url) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# --------------------------------------------------------------------------- the container command, here


@dataclasses.dataclass
class Frontend:
    process: subprocess.Popen[str]
    target: str
    env: dict[str, str]
    log: Path


@pytest.fixture
def container_frontend(triton: Any, model_repository: Path, tmp_path: Path) -> Iterator[Frontend]:
    """The front-end image's command with its environment (Dockerfile ENV, then compose), run here.

    Only what points outside the container is replaced: Triton's address, the
    model repository's path, the port (0: any free one) and the listening
    address (loopback here; the container's 0.0.0.0 is checked above).
    """
    stage = dockerfile_stages()["frontend"]
    service = compose()["services"]["frontend"]
    command = stage.exec_form("ENTRYPOINT") + (service.get("command") or stage.exec_form("CMD"))
    env = {**stage.env, **service_env(service)}
    env.update(
        SENTIMENT_TRITON_URL=triton.grpc_url,
        SENTIMENT_MODEL_REPOSITORY=str(model_repository),
        SENTIMENT_PORT="0",
        SENTIMENT_HOST="127.0.0.1",
        PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", os.defpath)]),
    )
    executable = shutil.which(command[0], path=str(BIN))
    assert executable, f"{command[0]} is not installed in {BIN}"
    log = tmp_path / "frontend.log"
    with log.open("w") as err:
        process = subprocess.Popen([executable, *command[1:]], env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "sentiment-server: serving on HOST:PORT" once ready
        match = re.search(r"serving on ([\d.]+):(\d+)", line)
        assert match, f"the container command did not start: {line!r}\n{log.read_text()[-3000:]}"
        yield Frontend(process, f"127.0.0.1:{match.group(2)}", {**env, "SENTIMENT_PORT": match.group(2)}, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.triton
def test_frontend_container_command_runs_here(container_frontend: Frontend, service: Any) -> None:
    """Classify through it: the same answers as the test suite's own front-end on the same model."""
    from sentiment_client import SentimentClient

    running = container_frontend
    texts = ["I love this movie!", "This was a waste of time."]
    with SentimentClient(running.target) as client, SentimentClient(service.target) as reference:
        assert client.health() == "SERVING"
        assert client.model_info() == reference.model_info()
        got, want = client.classify(texts), reference.classify(texts)
        assert [r.label for r in got.results] == [r.label for r in want.results]
        assert [r.score for r in got.results] == pytest.approx([r.score for r in want.results], abs=1e-6)

    # The image's HEALTHCHECK, as Docker runs it (shell form), in the container's environment.
    check = dockerfile_stages()["frontend"].last("HEALTHCHECK")
    assert check is not None
    shell_command = check.split(" CMD ", 1)[1]
    result = subprocess.run(["sh", "-c", shell_command], env=running.env, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout.strip()) == (0, "SERVING"), result.stderr

    # `docker stop`: SIGTERM, a clean exit well within the compose stop grace period.
    grace_s = int(compose()["services"]["frontend"]["stop_grace_period"].removesuffix("s"))
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=grace_s) == 0, running.log.read_text()[-2000:]
    assert any(line.startswith("{") for line in running.log.read_text().splitlines())  # json logs, from the image
