"""Checks of the deployment files: Dockerfile, compose demo, Kubernetes, systemd, Prometheus.

No container engine or cluster runs here, so each file is checked with the linter or schema
validator of its ecosystem (deploy/install-lint-tools.sh installs them), and the shipped
configurations are run against the real proxy and Choreo stand-in on loopback. A test whose
tool is missing is skipped, with a reason that names the install command.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml",
                           reason="PyYAML missing: pip install -r deploy/requirements-lint.txt")

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
DEMO_SECRETS = DEPLOY / "compose" / "demo-secrets"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD_UNIT = DEPLOY / "systemd" / "insights-proxy.service"
SYSTEMD_CONFIG = DEPLOY / "systemd" / "insights-proxy.toml"
CONTAINER_CONFIG = DEPLOY / "container" / "insights-proxy.toml"
PROBE = DEPLOY / "container" / "probe.py"
PROMETHEUS = DEPLOY / "prometheus"

INSTALL_HINT = "run: bash deploy/install-lint-tools.sh"
# The oldest Kubernetes release the manifests target (native sidecars are on by default from
# 1.29) and the newest schema kubernetes-validate 1.37 bundles.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# systemd-analyze security rates exposure from 0 to 10; --threshold takes tenths.
SYSTEMD_MAX_EXPOSURE_TENTHS = 20
DEFAULT_DRAIN_TIMEOUT_S = 10
STARTUP_TIMEOUT_S = 20.0
SAMPLE_QUERY = "{ listOrganizations { uuid handle name } }"


# ---------------------------------------------------------------------------------------------
# Helpers


def find_tool(name: str) -> str:
    """Return the path of a command-line tool, looking beside the running Python first."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not found; {INSTALL_HINT}")
    return found


def require_module(name: str) -> None:
    pytest.importorskip(name, reason=f"Python module {name} missing; {INSTALL_HINT}")


def run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def load_documents(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [document for document in yaml.safe_load_all(handle) if document is not None]


def kubernetes_documents() -> list[tuple[Path, dict]]:
    return [(path, document)
            for path in sorted(KUBERNETES.glob("*.yaml")) if path.name != "kustomization.yaml"
            for document in load_documents(path)]


def kubernetes_objects(kind: str) -> list[dict]:
    return [document for _, document in kubernetes_documents() if document["kind"] == kind]


def kubernetes_object(kind: str, name: str) -> dict:
    matches = [document for document in kubernetes_objects(kind)
               if document["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} named {name!r}, found {len(matches)}"
    return matches[0]


def configmap_toml(name: str) -> dict:
    return tomllib.loads(kubernetes_object("ConfigMap", name)["data"]["insights-proxy.toml"])


def pod_containers(deployment: dict) -> list[dict]:
    pod = deployment["spec"]["template"]["spec"]
    return pod.get("initContainers", []) + pod["containers"]


def proxy_container(deployment: dict) -> dict:
    matches = [container for container in pod_containers(deployment)
               if container.get("image", "").startswith("choreo-insights-proxy:")]
    assert len(matches) == 1, "expected one insights-proxy container in the pod"
    return matches[0]


def compose_services() -> dict[str, dict]:
    return load_documents(COMPOSE_FILE)[0]["services"]


def option_value(arguments: list[str], option: str) -> str:
    return arguments[arguments.index(option) + 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


def clean_environment(**overrides: str) -> dict[str, str]:
    """Return this process's environment without INSIGHTS_PROXY_* variables, plus overrides.

    The repository goes first on PYTHONPATH, so `python -m proxy` in a child process runs this
    checkout even where the package is not installed.
    """
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("INSIGHTS_PROXY_")}
    python_path = [str(REPO), *filter(None, [environment.get("PYTHONPATH")])]
    environment["PYTHONPATH"] = os.pathsep.join(python_path)
    environment.update(overrides)
    return environment


def http_get(url: str, token: str = "", timeout: float = 5) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post_json(url: str, body: dict, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(condition, timeout: float, description: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {description}")


def stop_process(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=5)


# ---------------------------------------------------------------------------------------------
# Dockerfile and build context


def dockerfile_instructions() -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_passes_hadolint():
    """hadolint reports nothing at all, not even style or info findings."""
    hadolint = find_tool("hadolint")
    result = run([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_builds_in_two_stages():
    """The runtime stage copies the virtual environment from a separate build stage."""
    froms = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) >= 2
    assert froms[0].endswith(" AS build")
    copies = [arguments for keyword, arguments in final_stage() if keyword == "COPY"]
    assert any(arguments.startswith("--from=build ") for arguments in copies)


def test_dockerfile_base_is_slim_python():
    """Both stages start from the slim Python 3.11 image."""
    argument = dict(arguments.split("=", 1) for keyword, arguments in dockerfile_instructions()
                    if keyword == "ARG" and "=" in arguments)
    slim_python = r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]{64})?"
    assert re.fullmatch(slim_python, argument["PYTHON_IMAGE"])


def test_dockerfile_runtime_user_is_numeric_non_root():
    """The last USER is a numeric uid other than 0, so runAsNonRoot can verify it."""
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), f"USER {users[-1]} is not numeric"
    assert int(uid) != 0
    if gid:
        assert gid.isdigit(), f"USER {users[-1]} has a non-numeric group"
        assert int(gid) != 0


def test_dockerfile_healthcheck_probes_healthz():
    """HEALTHCHECK runs the probe script against /healthz, which needs no admin token."""
    checks = [arguments for keyword, arguments in final_stage() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert 'CMD ["insights-proxy-probe", "healthz"]' in checks[0]


def test_dockerfile_bakes_in_no_secret():
    """No ENV, ARG or LABEL carries a secret, and nothing secret-looking is copied."""
    secret_name = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE", re.IGNORECASE)
    for keyword, arguments in dockerfile_instructions():
        if keyword in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"([A-Za-z_][\w.]*)=", arguments)
            assert not [name for name in names if secret_name.search(name)], arguments
        if keyword == "COPY" and not arguments.startswith("--from="):
            assert not secret_name.search(arguments), arguments


def test_dockerfile_serves_with_image_configuration():
    """The entry point is `insights-proxy serve`, reading the baseline configuration."""
    stage = final_stage()
    assert ("ENTRYPOINT", '["insights-proxy"]') in stage
    assert ("CMD", '["serve"]') in stage
    environment = " ".join(arguments for keyword, arguments in stage if keyword == "ENV")
    assert "INSIGHTS_PROXY_CONFIG=/etc/insights-proxy/insights-proxy.toml" in environment
    copies = [arguments for keyword, arguments in stage if keyword == "COPY"]
    baseline = "deploy/container/insights-proxy.toml /etc/insights-proxy/insights-proxy.toml"
    assert any(arguments.endswith(baseline) for arguments in copies)


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """Parse .dockerignore into (is_exception, regex) pairs, as Docker's pattern matcher does."""
    rules = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!")).lstrip("/")
        rules.append((exception, re.compile(glob_to_regex(pattern))))
    return rules


def glob_to_regex(pattern: str) -> str:
    """Translate a Go filepath.Match pattern extended with `**`, as .dockerignore uses it."""
    parts = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            parts.append(pattern[index:end + 1])
            index = end + 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return "".join(parts) + r"\Z"


def is_ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Apply the rules in order, the last match winning; a match on a parent folder counts."""
    segments = path.split("/")
    candidates = ["/".join(segments[:length]) for length in range(1, len(segments) + 1)]
    ignored = False
    for exception, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not exception
    return ignored


def test_dockerignore_admits_what_the_build_copies():
    """Every COPY source of the build exists and is inside the build context."""
    rules = dockerignore_rules()
    sources = []
    for keyword, arguments in dockerfile_instructions():
        if keyword != "COPY" or arguments.startswith("--from="):
            continue
        words = [word for word in arguments.split() if not word.startswith("--")]
        sources.extend(words[:-1])
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY source {source} does not exist"
        assert not is_ignored(source, rules), f"COPY source {source} is excluded by .dockerignore"
    assert not is_ignored("proxy/standin/insights-schema.graphql", rules)


@pytest.mark.parametrize("path", [
    "insights-proxy.toml",
    ".env",
    "client_secret",
    "secrets/admin_token",
    ".git/config",
    "deploy/compose/demo-secrets/client_secret",
    "deploy/kubernetes/secret.yaml",
    "tests/test_deploy.py",
    "proxy/__pycache__/cli.cpython-311.pyc",
    "proxy/standin/.app.py.swp",
])
def test_dockerignore_excludes_local_files(path):
    """Local configuration, secrets, tests and bytecode stay out of the build context."""
    assert is_ignored(path, dockerignore_rules())


def test_dockerignore_matcher_follows_docker_rules():
    """The test's own matcher: last match wins, and a folder exception admits its files."""
    rules = [(False, re.compile(glob_to_regex("*"))),
             (True, re.compile(glob_to_regex("proxy"))),
             (False, re.compile(glob_to_regex("**/__pycache__")))]
    assert is_ignored("README.md", rules)
    assert not is_ignored("proxy/cli.py", rules)
    assert is_ignored("proxy/__pycache__/cli.pyc", rules)


# ---------------------------------------------------------------------------------------------
# YAML style


def test_deploy_yaml_passes_yamllint():
    """All YAML under deploy/ is clean under deploy/.yamllint.yaml, warnings included."""
    require_module("yamllint")
    result = run([sys.executable, "-m", "yamllint", "--strict", "--format", "parsable",
                  "--config-file", str(DEPLOY / ".yamllint.yaml"), "."], cwd=DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# Kubernetes


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_match_schema(version):
    """Every object validates strictly (no unknown fields) against the Kubernetes schema."""
    require_module("kubernetes_validate")
    import kubernetes_validate

    documents = kubernetes_documents()
    assert len(documents) >= 10
    for path, document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {document['kind']}/{document['metadata']['name']}: "
                        f"{exc.message} at {'.'.join(map(str, exc.path))}")


def test_kubernetes_validator_rejects_unknown_field():
    """The strict validator runs offline and catches a misspelt field."""
    require_module("kubernetes_validate")
    import kubernetes_validate

    deployment = copy.deepcopy(kubernetes_object("Deployment", "insights-proxy"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest():
    """kustomization.yaml applies every manifest file except the separate sidecar example."""
    kustomization = load_documents(KUBERNETES / "kustomization.yaml")[0]
    manifests = {path.name for path in KUBERNETES.glob("*.yaml")}
    assert set(kustomization["resources"]) == manifests - {"kustomization.yaml",
                                                           "sidecar-example.yaml"}
    namespace = kubernetes_object("Namespace", kustomization["namespace"])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("name", ["insights-proxy", "reporting"])
def test_kubernetes_pods_meet_restricted_standard(name):
    """Pods satisfy the "restricted" Pod Security Standard and mount no API token."""
    deployment = kubernetes_object("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(forbidden)
    assert not [volume for volume in pod["volumes"] if "hostPath" in volume]
    for container in pod_containers(deployment):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert "memory" in container["resources"]["limits"], container["name"]


@pytest.mark.parametrize("deployment_name, configmap_name", [
    ("insights-proxy", "insights-proxy-config"),
    ("reporting", "reporting-insights-proxy-config"),
])
def test_kubernetes_probes_use_admin_port(deployment_name, configmap_name):
    """Liveness gets /healthz on the admin port; readiness runs the probe script for /readyz."""
    deployment = kubernetes_object("Deployment", deployment_name)
    container = proxy_container(deployment)
    config = configmap_toml(configmap_name)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}

    liveness = container["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert ports[liveness["port"]] == config["admin"]["port"]
    assert container["readinessProbe"]["exec"]["command"] == ["insights-proxy-probe", "readyz"]
    # kubelet reaches the pod IP, so the admin listener must leave loopback, with a token.
    assert config["admin"]["host"] == "0.0.0.0"
    assert config["admin"]["token_file"]


def test_kubernetes_proxy_off_loopback_requires_client_keys():
    """The shared proxy listens on the pod IP, so its configuration demands client keys."""
    config = configmap_toml("insights-proxy-config")
    assert config["server"]["host"] == "0.0.0.0"
    assert config["clients"], "no [[clients]] entry"
    assert not config["server"].get("allow_anonymous_network", False)
    service = kubernetes_object("Service", "insights-proxy")
    namespace = load_documents(KUBERNETES / "kustomization.yaml")[0]["namespace"]
    for suffix in ("", f".{namespace}", f".{namespace}.svc", f".{namespace}.svc.cluster.local"):
        assert service["metadata"]["name"] + suffix in config["server"]["allowed_hosts"]


def test_kubernetes_sidecar_listens_on_loopback():
    """The sidecar's GraphQL listener stays inside the pod, and it runs as a native sidecar."""
    config = configmap_toml("reporting-insights-proxy-config")
    assert config["server"]["host"] == "127.0.0.1"
    deployment = kubernetes_object("Deployment", "reporting")
    assert proxy_container(deployment)["restartPolicy"] == "Always"
    assert proxy_container(deployment) in deployment["spec"]["template"]["spec"]["initContainers"]


@pytest.mark.parametrize("deployment_name, configmap_name, secret_name", [
    ("insights-proxy", "insights-proxy-config", "insights-proxy"),
    ("reporting", "reporting-insights-proxy-config", "reporting-insights-proxy"),
])
def test_kubernetes_secret_files_match_mounts(deployment_name, configmap_name, secret_name):
    """The secret file paths of the configuration are keys of the mounted Secret."""
    deployment = kubernetes_object("Deployment", deployment_name)
    container = proxy_container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    config = configmap_toml(configmap_name)
    secret = kubernetes_object("Secret", secret_name)

    assert mounts["/etc/insights-proxy"]["configMap"]["name"] == configmap_name
    for path in (config["oauth"]["client_secret_file"], config["admin"]["token_file"]):
        folder, _, key = path.rpartition("/")
        assert mounts[folder]["secret"]["secretName"] == secret_name
        assert key in secret["stringData"]


def test_kubernetes_shipped_secrets_are_empty():
    """No Secret manifest carries a value, so nothing real or guessable is deployed by default."""
    secrets = kubernetes_objects("Secret")
    assert secrets
    for secret in secrets:
        assert "data" not in secret
        assert set(secret["stringData"].values()) == {""}, secret["metadata"]["name"]


def test_kubernetes_deployment_single_replica_recreate():
    """One replica replaced with Recreate, because Choreo may revoke a client's previous token."""
    for name in ("insights-proxy", "reporting"):
        spec = kubernetes_object("Deployment", name)["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"]["type"] == "Recreate"


def test_kubernetes_shutdown_fits_grace_period():
    """preStop sleep plus the drain timeout end before kubelet's SIGKILL."""
    deployment = kubernetes_object("Deployment", "insights-proxy")
    container = proxy_container(deployment)
    sleep_s = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain_s = configmap_toml("insights-proxy-config")["server"]["drain_timeout_s"]
    grace_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert sleep_s + drain_s < grace_s


def test_kubernetes_service_and_policy_match_pods():
    """Service and NetworkPolicy select the proxy pods and name ports the container has."""
    deployment = kubernetes_object("Deployment", "insights-proxy")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    port_names = {port["name"] for port in proxy_container(deployment)["ports"]}
    service = kubernetes_object("Service", "insights-proxy")
    policy = kubernetes_object("NetworkPolicy", "insights-proxy")

    assert service["spec"]["selector"].items() <= labels.items()
    assert {port["targetPort"] for port in service["spec"]["ports"]} == port_names
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]}
    assert ingress_ports == port_names
    egress_ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert egress_ports == {53, 443}


# ---------------------------------------------------------------------------------------------
# Compose demo


def test_compose_file_matches_compose_spec():
    """The compose file validates against the Compose specification's JSON schema."""
    require_module("check_jsonschema")
    result = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                  "vendor.compose-spec", str(COMPOSE_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_rejects_misspelt_key(tmp_path):
    """The bundled schema catches an unknown service key, so the check above can fail."""
    require_module("check_jsonschema")
    document = load_documents(COMPOSE_FILE)[0]
    document["services"]["proxy"]["healthchek"] = document["services"]["proxy"].pop("healthcheck")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                  "vendor.compose-spec", str(broken)])
    assert result.returncode == 1
    assert "healthchek" in result.stdout + result.stderr


def test_compose_proxy_reaches_standin_on_loopback():
    """The proxy shares the stand-in's network namespace and calls it on 127.0.0.1 only."""
    services = compose_services()
    proxy, standin = services["proxy"], services["standin"]
    standin_port = option_value(standin["command"], "--port")
    assert option_value(standin["command"], "--host") == "127.0.0.1"
    assert proxy["network_mode"] == "service:standin"
    urls = {key: value for key, value in proxy["environment"].items() if key.endswith("_URL")}
    assert len(urls) == 3
    for key, url in urls.items():
        assert url.startswith(f"http://127.0.0.1:{standin_port}/"), key


def test_compose_anonymous_access_is_explicit():
    """The proxy listens on 0.0.0.0 only together with allow_anonymous_network = true."""
    environment = compose_services()["proxy"]["environment"]
    assert environment["INSIGHTS_PROXY_SERVER__HOST"] == "0.0.0.0"
    assert environment["INSIGHTS_PROXY_SERVER__ALLOW_ANONYMOUS_NETWORK"] == "true"
    assert environment["INSIGHTS_PROXY_ADMIN__HOST"] == "0.0.0.0"
    assert environment["INSIGHTS_PROXY_ADMIN__TOKEN_FILE"].startswith("/run/secrets/")


def test_compose_publishes_on_host_loopback_only():
    """Every published port is bound to the host's 127.0.0.1."""
    published = [entry for service in compose_services().values()
                 for entry in service.get("ports", [])]
    assert published
    for entry in published:
        assert str(entry).startswith("127.0.0.1:"), entry


def test_compose_secrets_come_from_files():
    """Secrets are mounted files named by *_FILE variables; none is in the environment."""
    services = compose_services()
    environment = services["proxy"]["environment"]
    assert "INSIGHTS_PROXY_OAUTH__CLIENT_SECRET" not in environment
    assert "INSIGHTS_PROXY_ADMIN__TOKEN" not in environment
    declared = load_documents(COMPOSE_FILE)[0]["secrets"]
    for name in services["proxy"]["secrets"]:
        assert (COMPOSE_FILE.parent / declared[name]["file"]).is_file()
        assert f"/run/secrets/{name}" in environment.values()


def test_compose_demo_secret_matches_standin():
    """The stand-in accepts exactly the client id and secret the proxy sends."""
    services = compose_services()
    command = services["standin"]["command"]
    secret = (DEMO_SECRETS / "client_secret").read_text(encoding="utf-8").strip()
    assert option_value(command, "--client-secret") == secret
    client_id = services["proxy"]["environment"]["INSIGHTS_PROXY_OAUTH__CLIENT_ID"]
    assert option_value(command, "--client-id") == client_id


def test_compose_stop_grace_exceeds_drain():
    """`docker compose stop` waits longer than the proxy's drain timeout."""
    grace = compose_services()["proxy"]["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace[:-1]) > DEFAULT_DRAIN_TIMEOUT_S


def test_compose_containers_are_hardened():
    """The demo's own containers run read-only, without capabilities or privilege gain."""
    for name in ("standin", "proxy"):
        service = compose_services()[name]
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


# ---------------------------------------------------------------------------------------------
# systemd


def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """Return (section, key, value) for each assignment; keys may repeat, as systemd allows."""
    entries = []
    section = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key, value))
    return entries


def unit_values(key: str) -> list[str]:
    return [value for _, entry_key, value in unit_entries(SYSTEMD_UNIT) if entry_key == key]


def unit_for_checks(tmp_path: Path) -> Path:
    """Copy the unit, pointing ExecStart at a stub so systemd finds an executable there."""
    stub = tmp_path / "insights-proxy"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    text = SYSTEMD_UNIT.read_text(encoding="utf-8")
    assert "/opt/insights-proxy/bin/insights-proxy " in text
    unit = tmp_path / SYSTEMD_UNIT.name
    unit.write_text(text.replace("/opt/insights-proxy/bin/insights-proxy ", f"{stub} "),
                    encoding="utf-8")
    return unit


def test_systemd_unit_passes_verify(tmp_path):
    """systemd-analyze verify finds no unknown key, bad value or missing command."""
    systemd_analyze = find_tool("systemd-analyze")
    result = run([systemd_analyze, "verify", str(unit_for_checks(tmp_path))])
    assert result.returncode == 0, result.stderr
    # Unknown keys are only warnings with exit status 0, so any output is a failure.
    assert result.stdout + result.stderr == ""


def test_systemd_unit_exposure_is_low(tmp_path):
    """systemd-analyze security rates the unit's exposure at 2.0 or lower out of 10."""
    systemd_analyze = find_tool("systemd-analyze")
    result = run([systemd_analyze, "security", "--offline=true",
                  f"--threshold={SYSTEMD_MAX_EXPOSURE_TENTHS}", str(unit_for_checks(tmp_path))])
    overall = [line for line in result.stdout.splitlines() if "Overall exposure" in line]
    assert result.returncode == 0, "\n".join(overall) or result.stderr


def test_systemd_unit_passes_secret_as_credential():
    """The client secret arrives through LoadCredential=, read from the credentials folder."""
    credentials = unit_values("LoadCredential")
    assert credentials == ["client_secret:/etc/insights-proxy/credentials/client_secret"]
    assert "INSIGHTS_PROXY_OAUTH__CLIENT_SECRET_FILE=%d/client_secret" in unit_values("Environment")
    assert unit_values("DynamicUser") == ["yes"]
    assert unit_values("NoNewPrivileges") == ["yes"]
    assert unit_values("ProtectSystem") == ["strict"]


def test_systemd_unit_reloads_and_drains():
    """SIGHUP reloads, SIGTERM drains, and systemd waits longer than the drain timeout."""
    assert unit_values("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert unit_values("KillSignal") == ["SIGTERM"]
    assert int(unit_values("TimeoutStopSec")[0]) > DEFAULT_DRAIN_TIMEOUT_S
    assert unit_values("RestartPreventExitStatus") == ["2"]


def test_systemd_config_has_no_secret():
    """The example configuration leaves the secret to the credential and stays on loopback."""
    config = tomllib.loads(SYSTEMD_CONFIG.read_text(encoding="utf-8"))
    assert "client_secret" not in config["oauth"]
    assert "client_secret_file" not in config["oauth"]
    assert config["server"]["host"] == "127.0.0.1"
    assert config["admin"]["host"] == "127.0.0.1"


# ---------------------------------------------------------------------------------------------
# Prometheus


def test_prometheus_alert_rules_are_valid():
    """promtool accepts the alert rules file."""
    promtool = find_tool("promtool")
    result = run([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_alert_rules_pass_unit_tests():
    """The promtool unit tests of every alert pass."""
    promtool = find_tool("promtool")
    result = run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_alert_rules_all_unit_tested():
    """Each alert of alerts.yml appears in alerts_test.yml."""
    rules = load_documents(PROMETHEUS / "alerts.yml")[0]
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = load_documents(PROMETHEUS / "alerts_test.yml")[0]["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert alerts == tested


def test_prometheus_demo_config_is_valid(tmp_path):
    """The compose demo's Prometheus configuration and its rule file load in promtool."""
    promtool = find_tool("promtool")
    token_file = tmp_path / "admin_token"
    token_file.write_text("demo\n", encoding="utf-8")
    config = (PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8")
    assert "/run/secrets/admin_token" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/run/secrets/admin_token", str(token_file)), encoding="utf-8")
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    result = run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def alert_metric_names() -> set[str]:
    text = (PROMETHEUS / "alerts.yml").read_text(encoding="utf-8")
    names = set(re.findall(r"\binsights_proxy_[a-z0-9_]+", text))
    return {re.sub(r"_bucket$", "", name) for name in names}


# ---------------------------------------------------------------------------------------------
# insights-proxy-probe (deploy/container/probe.py) against a scripted admin listener


class AdminStub(http.server.BaseHTTPRequestHandler):
    """Admin listener double: /healthz always 200; /readyz per `ready` and the bearer token."""

    token = "stub-admin-token"
    ready = True
    seen_authorization: list[str | None] = []

    def do_GET(self):  # noqa: N802 (the name http.server dispatches to)
        AdminStub.seen_authorization.append(self.headers.get("Authorization"))
        if self.path == "/healthz":
            self._answer(200, {"status": "ok"})
        elif self.path != "/readyz":
            self._answer(404, {"error": "not found"})
        elif self.headers.get("Authorization") != f"Bearer {self.token}":
            self._answer(401, {"error": "admin token required"})
        elif not AdminStub.ready:
            self._answer(503, {"ready": False, "reason": "no token: token endpoint unreachable"})
        else:
            self._answer(200, {"ready": True})

    def _answer(self, status: int, body: dict) -> None:
        raw = json.dumps(body, indent=2).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format, *args):  # noqa: A002 (signature fixed by http.server)
        pass


@pytest.fixture
def admin_stub() -> Iterator[int]:
    AdminStub.ready = True
    AdminStub.seen_authorization = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AdminStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_probe(*arguments: str, environment: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(PROBE), *arguments], env=environment or clean_environment(),
               cwd=cwd, timeout=20)


def write_config(folder: Path, text: str) -> Path:
    path = folder / "insights-proxy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_probe_healthz_succeeds_without_token(admin_stub, tmp_path):
    """healthz exits 0 on 200 and sends no Authorization header, even with a token configured."""
    (tmp_path / "admin_token").write_text(f"{AdminStub.token}\n", encoding="utf-8")
    config = write_config(tmp_path, f'[admin]\nport = {admin_stub}\ntoken_file = "admin_token"\n')
    result = run_probe("healthz", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert AdminStub.seen_authorization == [None]


def test_probe_readyz_sends_token_from_file(admin_stub, tmp_path):
    """readyz reads the token file beside the configuration and sends it as a bearer token."""
    (tmp_path / "admin_token").write_text(f"{AdminStub.token}\n", encoding="utf-8")
    config = write_config(tmp_path, f'[admin]\nhost = "0.0.0.0"\nport = {admin_stub}\n'
                                    'token_file = "admin_token"\n')
    result = run_probe("readyz", environment=clean_environment(INSIGHTS_PROXY_CONFIG=str(config)))
    assert result.returncode == 0, result.stderr
    assert AdminStub.seen_authorization == [f"Bearer {AdminStub.token}"]


def test_probe_readyz_reports_not_ready(admin_stub, tmp_path):
    """A 503 from /readyz exits 1 and shows the reason, never the token."""
    AdminStub.ready = False
    environment = clean_environment(INSIGHTS_PROXY_ADMIN__PORT=str(admin_stub),
                                    INSIGHTS_PROXY_ADMIN__TOKEN=AdminStub.token)
    result = run_probe("readyz", environment=environment, cwd=tmp_path)
    assert result.returncode == 1
    assert "HTTP 503" in result.stderr
    assert "token endpoint unreachable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert AdminStub.token not in result.stderr + result.stdout


def test_probe_readyz_without_token_fails(admin_stub, tmp_path):
    """Without the admin token /readyz returns 401, which the probe reports as a failure."""
    environment = clean_environment(INSIGHTS_PROXY_ADMIN__PORT=str(admin_stub))
    result = run_probe("readyz", environment=environment, cwd=tmp_path)
    assert result.returncode == 1
    assert "HTTP 401" in result.stderr


def test_probe_environment_overrides_file(admin_stub, tmp_path):
    """INSIGHTS_PROXY_ADMIN__PORT wins over admin.port of the file, as it does for the proxy."""
    config = write_config(tmp_path, f"[admin]\nport = {free_port()}\n")
    environment = clean_environment(INSIGHTS_PROXY_ADMIN__PORT=str(admin_stub))
    result = run_probe("healthz", "--config", str(config), environment=environment)
    assert result.returncode == 0, result.stderr


def test_probe_connection_refused_fails(tmp_path):
    """No listener on the admin port exits 1 with the connection error."""
    environment = clean_environment(INSIGHTS_PROXY_ADMIN__PORT=str(free_port()))
    result = run_probe("healthz", environment=environment, cwd=tmp_path)
    assert result.returncode == 1
    assert "failed" in result.stderr


def test_probe_url_checks_loopback_url(admin_stub):
    """--url probes any loopback URL without a token."""
    result = run_probe("--url", f"http://127.0.0.1:{admin_stub}/healthz")
    assert result.returncode == 0, result.stderr
    assert AdminStub.seen_authorization == [None]


@pytest.mark.parametrize("arguments, message", [
    (["--url", "http://192.0.2.10:9901/healthz"], "not a loopback URL"),
    (["healthz", "--url", "http://127.0.0.1:1/"], "either a route"),
    ([], "either a route"),
    (["healthz", "--timeout", "0"], "--timeout"),
])
def test_probe_bad_arguments_exit_2(arguments, message, tmp_path):
    """Bad arguments exit 2 with a message, before any connection."""
    result = run_probe(*arguments, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_probe_unreachable_admin_host_exits_2(tmp_path):
    """An admin.host that is neither loopback nor a wildcard cannot be probed from inside."""
    environment = clean_environment(INSIGHTS_PROXY_ADMIN__HOST="192.0.2.10")
    result = run_probe("healthz", environment=environment, cwd=tmp_path)
    assert result.returncode == 2
    assert "admin.host" in result.stderr


def test_probe_ignores_http_proxy_variables(admin_stub):
    """HTTP_PROXY in the container's environment does not divert the probe."""
    environment = clean_environment(INSIGHTS_PROXY_ADMIN__PORT=str(admin_stub),
                                    HTTP_PROXY=f"http://127.0.0.1:{free_port()}",
                                    http_proxy=f"http://127.0.0.1:{free_port()}",
                                    NO_PROXY="")
    result = run_probe("healthz", environment=environment)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# The shipped configurations, run by the real proxy against the stand-in on loopback


def proxy_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "proxy", *arguments]


@pytest.fixture
def standin_process(tmp_path) -> Iterator[dict[str, str]]:
    """Run `insights-proxy simulate` with the compose demo's options on a free port."""
    pytest.importorskip("proxy.cli", reason="the proxy package is not importable")
    command = list(compose_services()["standin"]["command"])
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    log = (tmp_path / "standin.log").open("w", encoding="utf-8")
    process = subprocess.Popen(proxy_command(*command), stdout=log, stderr=subprocess.STDOUT,
                               cwd=tmp_path, env=clean_environment())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or _answers(f"{base}/oauth2/jwks"),
                   STARTUP_TIMEOUT_S, "the stand-in to listen")
        assert process.poll() is None, (tmp_path / "standin.log").read_text(encoding="utf-8")
        yield {
            "port": str(port),
            "client_id": option_value(command, "--client-id"),
            "client_secret": option_value(command, "--client-secret"),
        }
    finally:
        stop_process(process)
        log.close()


def _answers(url: str) -> bool:
    try:
        return http_get(url, timeout=1)[0] == 200
    except OSError:
        return False


def standin_overrides(standin_process: dict[str, str], compose_port: str) -> dict[str, str]:
    """Map the compose proxy's environment onto this test's ports and files."""
    environment = {}
    for key, value in compose_services()["proxy"]["environment"].items():
        value = str(value).replace(f"127.0.0.1:{compose_port}",
                                   f"127.0.0.1:{standin_process['port']}")
        if value.startswith("/run/secrets/"):
            value = str(DEMO_SECRETS / value.removeprefix("/run/secrets/"))
        environment[key] = value
    return environment


def test_compose_environment_serves_queries(standin_process, tmp_path):
    """The image's configuration plus the compose environment serves a query, and drains."""
    compose_port = option_value(compose_services()["standin"]["command"], "--port")
    overrides = standin_overrides(standin_process, compose_port)
    # Listen on loopback here: this machine's other interfaces are not the test's business.
    overrides["INSIGHTS_PROXY_SERVER__HOST"] = "127.0.0.1"
    overrides["INSIGHTS_PROXY_ADMIN__HOST"] = "127.0.0.1"
    proxy_port, admin_port = free_port(), free_port()
    overrides["INSIGHTS_PROXY_SERVER__PORT"] = str(proxy_port)
    overrides["INSIGHTS_PROXY_ADMIN__PORT"] = str(admin_port)
    environment = clean_environment(INSIGHTS_PROXY_CONFIG=str(CONTAINER_CONFIG), **overrides)
    admin_token = (DEMO_SECRETS / "admin_token").read_text(encoding="utf-8").strip()

    log_path = tmp_path / "proxy.log"
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(proxy_command("serve"), stdout=log, stderr=subprocess.STDOUT,
                                   cwd=tmp_path, env=environment)
        try:
            def probe_ready() -> bool:
                assert process.poll() is None, log_path.read_text(encoding="utf-8")
                return run_probe("readyz", environment=environment, cwd=tmp_path).returncode == 0

            wait_until(probe_ready, STARTUP_TIMEOUT_S, "insights-proxy-probe readyz to pass")
            assert run_probe("healthz", environment=environment, cwd=tmp_path).returncode == 0

            status, body = http_post_json(f"http://127.0.0.1:{proxy_port}/query-api",
                                          {"query": SAMPLE_QUERY})
            assert status == 200, body
            organizations = json.loads(body)["data"]["listOrganizations"]
            assert organizations and organizations[0]["uuid"]

            status, _ = http_get(f"http://127.0.0.1:{admin_port}/metrics")
            assert status == 401
            status, metrics = http_get(f"http://127.0.0.1:{admin_port}/metrics", admin_token)
            assert status == 200
            exposed = set(re.findall(r"^(?:# TYPE )?(insights_proxy_[a-z0-9_]+)",
                                     metrics.decode(), re.MULTILINE))
            missing = {name for name in alert_metric_names()
                       if name not in exposed and f"{name}_bucket" not in exposed}
            assert not missing, f"alerts.yml uses metrics the proxy does not export: {missing}"
        finally:
            exit_status = stop_process(process)
    assert exit_status == 0, log_path.read_text(encoding="utf-8")
    assert admin_token not in log_path.read_text(encoding="utf-8")


def test_container_baseline_rejects_anonymous_network(tmp_path):
    """Without client keys or the explicit flag, the image's configuration exits 2."""
    pytest.importorskip("proxy.cli", reason="the proxy package is not importable")
    environment = clean_environment(
        INSIGHTS_PROXY_CONFIG=str(CONTAINER_CONFIG),
        INSIGHTS_PROXY_SERVER__PORT=str(free_port()),
        INSIGHTS_PROXY_ADMIN__PORT=str(free_port()),
        INSIGHTS_PROXY_OAUTH__CLIENT_ID="demo-client",
        INSIGHTS_PROXY_OAUTH__CLIENT_SECRET_FILE=str(DEMO_SECRETS / "client_secret"),
    )
    result = run(proxy_command("serve"), env=environment, cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "server.allow_anonymous_network" in result.stderr


def hash_client_key(key: str, tmp_path: Path) -> str:
    result = run(proxy_command("hash-key"), stdin=f"{key}\n", cwd=tmp_path,
                 env=clean_environment())
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def shipped_config(source: str, tmp_path: Path) -> Path:
    """Write a shipped configuration to tmp_path, with a real hash for placeholder client keys."""
    if source.endswith(".toml"):
        text = (DEPLOY / source).read_text(encoding="utf-8")
    else:
        file_name, _, configmap_name = source.partition("#")
        documents = load_documents(DEPLOY / file_name)
        configmap = [document for document in documents if document["kind"] == "ConfigMap"
                     and document["metadata"]["name"] == configmap_name][0]
        text = configmap["data"]["insights-proxy.toml"]
    text = re.sub(r'key_hash = "REPLACE[^"]*"',
                  f'key_hash = "{hash_client_key("k" * 43, tmp_path)}"', text)
    return write_config(tmp_path, text)


SHIPPED_CONFIGS = [
    "kubernetes/configmap.yaml#insights-proxy-config",
    "kubernetes/sidecar-example.yaml#reporting-insights-proxy-config",
    "systemd/insights-proxy.toml",
]


def check_environment(standin_process: dict[str, str], tmp_path: Path, *,
                      client_secret: str | None = None) -> dict[str, str]:
    """Point a shipped configuration at the stand-in, with its secrets in files under tmp_path."""
    secret_file = tmp_path / "client-secret"
    if client_secret is None:
        client_secret = standin_process["client_secret"]
    secret_file.write_text(client_secret, encoding="utf-8")
    token_file = tmp_path / "admin-token"
    token_file.write_text("check-admin-token", encoding="utf-8")
    base = f"http://127.0.0.1:{standin_process['port']}"
    return clean_environment(
        INSIGHTS_PROXY_UPSTREAM__URL=f"{base}/93tu/insights/1.0.0/query-api",
        INSIGHTS_PROXY_OAUTH__TOKEN_URL=f"{base}/oauth2/token",
        INSIGHTS_PROXY_OAUTH__REVOKE_URL=f"{base}/oauth2/revoke",
        INSIGHTS_PROXY_OAUTH__CLIENT_ID=standin_process["client_id"],
        INSIGHTS_PROXY_OAUTH__CLIENT_SECRET_FILE=str(secret_file),
        INSIGHTS_PROXY_ADMIN__TOKEN_FILE=str(token_file),
    )


@pytest.mark.parametrize("source", SHIPPED_CONFIGS)
def test_shipped_config_passes_check(source, standin_process, tmp_path):
    """`insights-proxy check` accepts each shipped configuration and queries the stand-in."""
    config = shipped_config(source, tmp_path)
    environment = check_environment(standin_process, tmp_path)
    if source.startswith("systemd/"):
        # The admin listener stays on loopback there, without a token file.
        del environment["INSIGHTS_PROXY_ADMIN__TOKEN_FILE"]
    result = run(proxy_command("check", "--config", str(config)), env=environment, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "listOrganizations" in result.stdout


def test_kubernetes_placeholder_key_hash_is_rejected(standin_process, tmp_path):
    """The ConfigMap's placeholder key hash stops the proxy with exit 2, naming the key."""
    text = configmap_toml("insights-proxy-config")
    assert text["clients"][0]["key_hash"].startswith("REPLACE")
    raw = kubernetes_object("ConfigMap", "insights-proxy-config")["data"]["insights-proxy.toml"]
    config = write_config(tmp_path, raw)
    result = run(proxy_command("check", "--config", str(config)),
                 env=check_environment(standin_process, tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "key_hash" in result.stdout + result.stderr


def test_kubernetes_empty_secret_is_rejected(standin_process, tmp_path):
    """An empty client-secret file, as secret.yaml ships it, stops the proxy with exit 2."""
    config = shipped_config("kubernetes/configmap.yaml#insights-proxy-config", tmp_path)
    result = run(proxy_command("check", "--config", str(config)),
                 env=check_environment(standin_process, tmp_path, client_secret=""),
                 cwd=tmp_path)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "oauth.client_secret_file" in output
    assert "empty" in output
