"""Static checks of the container files: deploy/docker (Dockerfiles), deploy/compose, .dockerignore.

hadolint and checkov lint the Dockerfiles; checkov's secrets scan reads the compose file and its
scripts (checkov has no Compose framework, so the compose policy below is checked on the file as
`docker compose config` resolves it). Each tool is also shown a careless file, so that a tool that
silently checks nothing fails here. The image build runs only where a Docker daemon answers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.static import _container_tools as tools
from tests.static._container_tools import ROOT, CheckovRun

DOCKERFILES = {
    "hub": ROOT / "deploy/docker/hub.Dockerfile",
    "agent": ROOT / "deploy/docker/agent.Dockerfile",
}
COMPOSE_DIR = ROOT / "deploy/compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
MOSQUITTO_CONF = ROOT / "deploy/mosquitto/edgefleet.conf"
DOCKERIGNORE = ROOT / ".dockerignore"
SYSTEMD_DIR = ROOT / "deploy/systemd"
UID = "10001"
# name:tag@sha256:digest; the name may carry a registry and path.
PINNED = re.compile(r"^[\w.\-/]+:[\w.\-]+@sha256:[0-9a-f]{64}$")
SECRET_NAME = re.compile(r"PASSWORD|PASSPHRASE|SECRET|TOKEN|PRIVATE", re.IGNORECASE)
EDGEFLEET_SERVICES = ("init", "hub-1", "hub-2", "provision", "agent-1", "agent-2", "agent-3")
HUBS = ("hub-1", "hub-2")
AGENTS = ("agent-1", "agent-2", "agent-3")
ONE_SHOT = ("init", "provision")


# --- Dockerfiles, read as instructions -----------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        joined.append((word.upper(), rest.strip()))
    return joined


def args_of(dockerfile: Path, instruction: str) -> list[str]:
    return [rest for word, rest in instructions(dockerfile) if word == instruction]


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    found = instructions(dockerfile)
    last_from = max(i for i, (word, _) in enumerate(found) if word == "FROM")
    return found[last_from:]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(name: str) -> None:
    done = subprocess.run(
        [tools.hadolint(), "--no-color", "--format", "json", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(done.stdout or "[]")
    assert findings == [], f"hadolint on {name}: {json.dumps(findings, indent=1)}"
    assert done.returncode == 0, done.stderr


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install flask\n", encoding="utf-8")
    done = subprocess.run(
        [tools.hadolint(), "--no-color", "--format", "json", str(careless)],
        capture_output=True,
        text=True,
        check=False,
    )
    codes = {f["code"] for f in json.loads(done.stdout)}
    assert {"DL3007", "DL3013", "DL3042"} <= codes, codes
    assert done.returncode != 0


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_is_multi_stage_on_pinned_bases(name: str) -> None:
    dockerfile = DOCKERFILES[name]
    bases = [rest.split()[0] for rest in args_of(dockerfile, "FROM")]
    assert len(bases) >= 2, f"{name}: expected a build stage and a runtime stage, got FROM {bases}"
    for base in bases:
        assert PINNED.match(base), f"{name}: base {base!r} is not pinned as name:tag@sha256:digest"
    # The runtime stage takes the build's virtualenv and nothing of its toolchain.
    copies = [rest for word, rest in final_stage(dockerfile) if word == "COPY"]
    assert any(c.startswith("--from=build /opt/edgefleet ") for c in copies), copies
    assert not [rest for word, rest in final_stage(dockerfile) if word == "RUN" and "pip " in rest]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_runs_as_a_fixed_non_root_user(name: str) -> None:
    dockerfile = DOCKERFILES[name]
    users = [rest for word, rest in final_stage(dockerfile) if word == "USER"]
    assert users and users[-1] == f"{UID}:{UID}", f"{name}: last USER is {users[-1:]}, expected {UID}:{UID}"
    setup = " ".join(rest for word, rest in final_stage(dockerfile) if word == "RUN")
    assert f"--uid {UID}" in setup and f"--gid {UID}" in setup, setup


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_image_has_healthcheck_labels_and_a_data_volume(name: str) -> None:
    stage = final_stage(DOCKERFILES[name])
    health = [rest for word, rest in stage if word == "HEALTHCHECK"]
    assert len(health) == 1 and "CMD" in health[0] and "healthcheck.py" in health[0], health
    labels = " ".join(rest for word, rest in stage if word == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels, f"{name}: no org.opencontainers.image.{key}"
    assert [rest for word, rest in stage if word == "VOLUME"] == ['["/var/lib/edgefleet"]']
    assert [rest for word, rest in stage if word == "WORKDIR"] == ["/var/lib/edgefleet"]


def test_hub_image_exposes_api_and_grpc_on_the_ports_it_binds() -> None:
    stage = final_stage(DOCKERFILES["hub"])
    exposed = " ".join(rest for word, rest in stage if word == "EXPOSE").split()
    assert sorted(exposed) == ["50051", "8080"]
    env = " ".join(rest for word, rest in stage if word == "ENV")
    for setting in ("EDGEFLEET_API_PORT=8080", "EDGEFLEET_GRPC_PORT=50051", "EDGEFLEET_API_HOST=0.0.0.0"):
        assert setting in env, f"hub image: expected ENV {setting}"


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_no_secret_is_baked_into_an_image(name: str) -> None:
    for word, rest in instructions(DOCKERFILES[name]):
        if word in ("ENV", "ARG"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", rest) or [rest.split("=")[0]]
            leaked = [n for n in names if SECRET_NAME.search(n) or n.endswith("_KEY")]
            assert not leaked, f"{name}: {word} {leaked} would bake a secret into every layer"
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.(key|pem|env|token)\b|secret", rest), f"{name}: {word} {rest}"


def _extra(pyproject: dict[str, Any], name: str) -> set[str]:
    """Requirement names of an extra, following edgefleet[other] references."""
    names: set[str] = set()
    for requirement in pyproject["project"]["optional-dependencies"][name]:
        base = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
        if base == "edgefleet":
            for other in re.findall(r"\[([^\]]+)\]", requirement)[0].split(","):
                names |= _extra(pyproject, other.strip())
        else:
            names.add(base)
    return names


def test_agent_image_has_no_torch() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    agent = _extra(pyproject, "agent")
    assert "torch" in _extra(pyproject, "hub"), "the check below would prove nothing"
    assert not agent & {"torch", "fastapi", "sqlmodel", "sqlalchemy", "tensorflow-cpu"}, agent
    build = " ".join(rest for word, rest in instructions(DOCKERFILES["agent"]) if word == "RUN")
    assert "[agent]" in build and "[hub]" not in build, build
    # The build itself fails if torch ever arrives through a dependency.
    assert "'torch'" in build and "sys.exit(" in build


def _ignore_rules() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_admits_only_what_the_images_copy() -> None:
    rules = _ignore_rules()
    assert rules[0] == "*", "expected an allow-list: everything ignored first, then named exceptions"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied: set[str] = set()
    for dockerfile in DOCKERFILES.values():
        for rest in args_of(dockerfile, "COPY"):
            parts = [p for p in rest.split() if not p.startswith("--")]
            if rest.startswith("--from="):
                continue
            copied |= {p.rstrip("/") for p in parts[:-1]}
    assert copied == allowed, f"COPY sources {sorted(copied)} differ from .dockerignore's {sorted(allowed)}"
    for path in allowed:
        assert (ROOT / path).exists(), f".dockerignore admits {path}, which does not exist"


# --- compose -----------------------------------------------------------------------------------


def _compose(
    args: list[str], *, password: str | None, cwd: Path, env_file: Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "IMAGE_TAG")}
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    # An empty --env-file: a developer's deploy/compose/.env must not decide what this test sees.
    argv = [*tools.compose(), "--env-file", str(env_file), "-f", str(COMPOSE), *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def compose_config(empty_env_file: Path) -> dict[str, Any]:
    done = _compose(["config", "--format", "json"], password="pw", cwd=COMPOSE_DIR, env_file=empty_env_file)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def test_compose_file_is_valid(empty_env_file: Path) -> None:
    done = _compose(["config", "-q"], password="pw", cwd=COMPOSE_DIR, env_file=empty_env_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_compose_refuses_to_run_without_a_database_password(empty_env_file: Path) -> None:
    done = _compose(["config", "-q"], password=None, cwd=COMPOSE_DIR, env_file=empty_env_file)
    assert done.returncode != 0
    assert "POSTGRES_PASSWORD" in done.stderr and "docs/deploy.md" in done.stderr, done.stderr


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_compose_runs_two_hubs_on_postgres_the_broker_and_three_agents(
    compose_config: dict[str, Any],
) -> None:
    services = compose_config["services"]
    assert set(services) == {"postgres", "mosquitto", *EDGEFLEET_SERVICES}
    for hub in HUBS:
        env = _env(services[hub])
        assert env["EDGEFLEET_DATABASE_URL"].startswith("postgresql+psycopg://edgefleet@postgres:5432/")
        assert env["EDGEFLEET_MQTT_HOST"] == "mosquitto" and env["EDGEFLEET_MQTT_PORT"] == "8883"
        assert services[hub]["image"].startswith("edgefleet-hub:")
        # Devices reach either replica's artifact service through one name.
        assert "hub" in services[hub]["networks"]["default"]["aliases"]
        assert env["EDGEFLEET_GRPC_PUBLIC_ENDPOINT"] == "hub:50051"
        mounts = {m["target"]: m["source"] for m in services[hub]["volumes"]}
        assert mounts["/var/lib/edgefleet"] == "hub-data", "the replicas must share one data volume"
    assert _env(services["hub-1"]) == _env(services["hub-2"]), "two replicas, one configuration"
    # The MQTT client id derives from the hostname: fixed, so a recreated hub resumes its session,
    # and distinct, so the replicas do not take each other's.
    assert [services[h].get("hostname") for h in HUBS] == list(HUBS)
    for agent in AGENTS:
        assert services[agent]["image"].startswith("edgefleet-agent:")
        assert services[agent]["command"] == ["run", "--config", "/etc/edgefleet/agent.toml"]


def _depends(service: dict[str, Any]) -> dict[str, str]:
    return {name: dep["condition"] for name, dep in (service.get("depends_on") or {}).items()}


def test_compose_start_order(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    healthy, done = "service_healthy", "service_completed_successfully"
    assert _depends(services["init"]) == {"postgres": healthy}
    assert _depends(services["mosquitto"]) == {"init": done}
    assert _depends(services["hub-1"]) == {"init": done, "postgres": healthy, "mosquitto": healthy}
    # The second replica starts once the first has created the keys and the CA: never two at once.
    assert _depends(services["hub-2"]) == {"hub-1": healthy}
    assert _depends(services["provision"]) == {"hub-1": healthy}
    for agent in AGENTS:
        assert _depends(services[agent]) == {"provision": done, "mosquitto": healthy}
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no"
        else:
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_compose_services_are_hardened(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name in EDGEFLEET_SERVICES:
        service = services[name]
        assert service["user"] == f"{UID}:{UID}", name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"] and not service.get("cap_add"), name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert not service.get("privileged"), name
    for name, service in services.items():
        assert not service.get("privileged"), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("cap_drop") == ["ALL"], name
        if name not in ONE_SHOT:
            assert service["deploy"]["resources"]["limits"]["memory"], f"{name}: no memory limit"
        if "build" not in service:
            assert PINNED.match(service["image"]), f"{name}: {service['image']} is not pinned by digest"
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond this host"


def _conf_value(key: str) -> str:
    for line in MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines():
        if line.startswith(key + " "):
            return line.split(None, 1)[1].strip()
    raise AssertionError(f"{MOSQUITTO_CONF} has no {key}")


def test_compose_broker_runs_the_shipped_mosquitto_config(compose_config: dict[str, Any]) -> None:
    broker = compose_config["services"]["mosquitto"]
    binds = {Path(m["source"]).resolve(): m["target"] for m in broker["volumes"] if m["type"] == "bind"}
    assert binds[MOSQUITTO_CONF.resolve()] == "/etc/mosquitto/edgefleet.conf"
    assert binds[MOSQUITTO_CONF.with_suffix(".acl").resolve()] == _conf_value("acl_file")
    assert "exec mosquitto -c /etc/mosquitto/edgefleet.conf" in broker["command"][-1]
    volumes = {m["target"]: m for m in broker["volumes"] if m["type"] == "volume"}
    certs = volumes[str(Path(_conf_value("certfile")).parent)]
    for key in ("keyfile", "cafile", "crlfile"):
        assert str(Path(_conf_value(key)).parent) == certs["target"], key
    # Only the broker's folder of the hubs' volume: never the CA key beside it.
    assert certs["source"] == "hub-data" and certs["volume"]["subpath"] == "broker"
    assert volumes[_conf_value("persistence_location").rstrip("/")]["source"] == "broker-data"
    crl = _env(compose_config["services"]["hub-1"])["EDGEFLEET_CRL_FILE"]
    assert crl == "/var/lib/edgefleet/broker/" + Path(_conf_value("crlfile")).name


def test_compose_agents_see_only_their_own_bundle(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    provisioned = services["provision"]["command"]
    for agent, device in zip(AGENTS, provisioned, strict=True):
        mounts = {m["target"]: m for m in services[agent]["volumes"]}
        bundle = mounts["/etc/edgefleet"]
        assert bundle["read_only"] is True
        assert bundle["volume"]["subpath"] == f"devices/{device}", agent
        assert mounts["/var/lib/edgefleet"]["source"] == f"{agent}-state"


def test_compose_scripts_are_mounted_and_exist(compose_config: dict[str, Any]) -> None:
    for name in ONE_SHOT:
        service = compose_config["services"][name]
        script = service["entrypoint"][-1]
        binds = {m["target"]: Path(m["source"]) for m in service["volumes"] if m["type"] == "bind"}
        source = binds[script]
        assert source.is_file() and source.parent == COMPOSE_DIR, source
        assert source.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
        assert "set -eu" in source.read_text(encoding="utf-8")


# --- checkov, once for every file ----------------------------------------------------------------


def _random_token() -> str:
    """A made-up GitHub-style token, new each run, for the secrets scan to find."""
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


@pytest.fixture(scope="module")
def careless(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("careless")
    dockerfile = folder / "Dockerfile"
    dockerfile.write_text("FROM python:latest\nADD . /app\nRUN pip install flask\n", encoding="utf-8")
    compose_file = folder / "compose.yaml"
    compose_file.write_text(
        f"services:\n  app:\n    image: app\n    environment:\n      GITHUB_TOKEN: {_random_token()}\n",
        encoding="utf-8",
    )
    return {"dockerfile": dockerfile.resolve(), "compose": compose_file.resolve()}


OURS = [
    *DOCKERFILES.values(),
    COMPOSE,
    COMPOSE_DIR / "init-hub.sh",
    COMPOSE_DIR / "provision-devices.sh",
    SYSTEMD_DIR / "hub.env.example",
]


@pytest.fixture(scope="module")
def checkov_run(careless: dict[str, Path]) -> Iterator[CheckovRun]:
    # Slow (~15-30 s): one run over every file, shared by the tests below.
    yield tools.run_checkov([*OURS, *careless.values()], ["dockerfile", "secrets"])


def test_checkov_passes_the_dockerfiles(checkov_run: CheckovRun) -> None:
    ours = {p.resolve() for p in OURS}
    failed = [f for fs in checkov_run.failed.values() for f in fs if f.file in ours]
    assert not failed, "\n".join(f"{f.check_id} {f.file.name}: {f.name}" for f in failed)
    for dockerfile in DOCKERFILES.values():
        passed = [f for f in checkov_run.passed["dockerfile"] if f.file == dockerfile.resolve()]
        assert len(passed) >= 10, f"checkov ran only {len(passed)} checks on {dockerfile.name}"


def test_checkov_skips_are_justified(checkov_run: CheckovRun) -> None:
    for findings in checkov_run.skipped.values():
        for f in findings:
            assert f.suppress_comment and f.suppress_comment.strip(), f"{f.check_id} skipped without a reason"


def test_checkov_flags_the_careless_files(checkov_run: CheckovRun, careless: dict[str, Path]) -> None:
    docker_ids = {f.check_id for f in checkov_run.failed["dockerfile"] if f.file == careless["dockerfile"]}
    assert {"CKV_DOCKER_2", "CKV_DOCKER_3", "CKV_DOCKER_4", "CKV_DOCKER_7"} <= docker_ids, docker_ids
    # The secrets scan read the compose files: it found the planted token and nothing of ours.
    found = checkov_run.files(checkov_run.failed, "secrets")
    assert found == {careless["compose"]}, (
        f"secrets scan found {sorted(map(str, found))}; reports: {sorted(checkov_run.failed)}"
    )


# --- the images themselves, where a Docker daemon answers ----------------------------------------


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", ["agent", "hub"])
def test_image_builds_and_runs_as_designed(name: str) -> None:
    if not tools.docker_daemon_answers():
        pytest.skip("no Docker daemon on this machine: the image build runs where one answers")
    tag = f"edgefleet-{name}:test"
    built = _docker("build", "-f", str(DOCKERFILES[name]), "-t", tag, str(ROOT), timeout=3000)
    assert built.returncode == 0, built.stderr[-4000:]
    image = json.loads(_docker("image", "inspect", tag).stdout)[0]["Config"]
    assert image["User"] == f"{UID}:{UID}"
    assert image["Healthcheck"]["Test"][:2] == ["CMD", "python"]
    assert image["Labels"]["org.opencontainers.image.title"] == f"edgefleet-{name}"
    version = _docker("run", "--rm", "--read-only", tag, "--version")
    assert version.returncode == 0 and "0.1.0" in version.stdout + version.stderr, version
    probe = _docker("run", "--rm", "--entrypoint", "python", tag, "-c", "import torch")
    if name == "agent":
        assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr, probe.stderr
        assert image.get("ExposedPorts") is None
    else:
        assert probe.returncode == 0, probe.stderr
        assert set(image["ExposedPorts"]) == {"8080/tcp", "50051/tcp"}
