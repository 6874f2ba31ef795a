"""Static checks of deploy/: the files parse, and every command and VYBE_* variable they
name exists in the code (the CLI parser, common.settings.Settings). Docker does not run here."""

from __future__ import annotations

import re
import shlex
import subprocess
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import yaml

from cli.main import build_parser
from common.settings import Settings, load_settings
from deploy_support import DEPLOY, ROOT, load_local_cluster, nginx_binary

if TYPE_CHECKING:
    from pathlib import Path

K8S = DEPLOY / "k8s"
SETTINGS = {f.name for f in msgspec.structs.fields(Settings)}
DEPLOY_FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def _subcommands() -> dict[str, Any]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return dict(action.choices)


def _check_argv(argv: list[str], where: str) -> None:
    """``argv`` (after ``vybe``) must parse with the real CLI parser."""
    if argv and argv[0] == "vybe":
        argv = argv[1:]
    assert argv, f"{where}: no command"
    if argv[0] == "loadtest":
        return
    try:
        build_parser().parse_args(argv)
    except SystemExit as err:
        raise AssertionError(f"{where}: `vybe {' '.join(argv)}` is not a valid command") from err


def _k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def test_every_vybe_variable_is_a_setting() -> None:
    """Every VYBE_* name in deploy/ (Dockerfile, compose, k8s, nginx, scripts) is a Settings field."""
    unknown: dict[str, set[str]] = {}
    for path in DEPLOY_FILES:
        for name in re.findall(r"\bVYBE_[A-Z0-9_]+", path.read_text(errors="replace")):
            if name[len("VYBE_"):].lower() not in SETTINGS:
                unknown.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert not unknown, f"VYBE_* names that common.settings.Settings does not read: {unknown}"


def test_configured_values_are_valid_settings() -> None:
    """The literal VYBE_* values of the ConfigMap, compose and Deployments pass load_settings."""
    envs: list[tuple[str, dict[str, str]]] = []
    for doc in _k8s_docs():
        if doc["kind"] == "ConfigMap":
            envs.append((doc["metadata"]["name"], dict(doc["data"])))
        for c in _containers(doc):
            envs.append((f"{doc['metadata']['name']}/{c['name']}",
                         {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}))
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        if isinstance(env, dict):
            envs.append((f"compose:{name}", {k: str(v) for k, v in env.items() if "${" not in str(v)}))
    assert envs
    for where, env in envs:
        vybe = {k: v for k, v in env.items() if k.startswith("VYBE_")}
        try:
            load_settings(vybe)
        except Exception as err:
            raise AssertionError(f"{where}: {err}") from err


def test_every_command_exists_in_the_cli() -> None:
    """Dockerfile ENTRYPOINT/CMD, compose commands, k8s args and `vybe X` mentions are real subcommands."""
    docker = (DEPLOY / "Dockerfile").read_text()
    entry = yaml.safe_load(re.search(r"^ENTRYPOINT (.+)$", docker, re.MULTILINE).group(1))  # JSON arrays are YAML
    cmd = yaml.safe_load(re.search(r"^CMD (.+)$", docker, re.MULTILINE).group(1))
    assert entry == ["vybe"], entry
    _check_argv(cmd, "Dockerfile CMD")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    built = {n for n, s in compose["services"].items() if "build" in s or str(s.get("image", "")).startswith("vybe")}
    for name in built:
        command = compose["services"][name].get("command")
        assert command, f"compose service {name} runs the vybe image without a command"
        _check_argv(command if isinstance(command, list) else shlex.split(command), f"compose:{name}")
    for doc in _k8s_docs():
        for c in _containers(doc):
            if str(c["image"]).startswith("vybe-live"):
                assert "command" not in c, "keep the image's entrypoint (vybe); put the subcommand in args"
                _check_argv(list(c["args"]), f"k8s {doc['metadata']['name']}/{c['name']}")
    subcommands = _subcommands()
    for path in DEPLOY_FILES:
        for word in re.findall(r"(?<![\w/.-])vybe ([a-z][a-z-]*)", path.read_text(errors="replace")):
            assert word in subcommands, f"{path.relative_to(ROOT)} mentions `vybe {word}`: no such subcommand"


def test_dockerfile_is_slim_non_root_and_pins_cpu_torch() -> None:
    """Slim base, numeric non-root USER, torch==2.13.0 installed before the project's ml extra."""
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert froms and all("slim" in f for f in froms), froms
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", text, re.MULTILINE)
    torch_at, project_at = text.index('"torch==${TORCH_VERSION}"'), text.index('pip install ".${EXTRAS')
    assert torch_at < project_at and "ARG EXTRAS=ml" in text
    for src in re.findall(r"^COPY (?!--)(\S+) ", text, re.MULTILINE):
        assert (ROOT / src).exists(), f"COPY {src}: no such path in the repo"


def test_compose_services_and_health_checks() -> None:
    """compose: PostgreSQL, Redis >= 7, a migrate job, two gateways behind nginx, two workers, health checks."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    svcs = compose["services"]
    gateways = [n for n, s in svcs.items() if s.get("command") == ["gateway"]]
    workers = [n for n, s in svcs.items() if s.get("command") == ["worker"]]
    assert len(gateways) == 2, gateways
    assert sum(svcs[w].get("deploy", {}).get("replicas", 1) for w in workers) == 2
    assert svcs["migrate"]["command"] == ["migrate"] and svcs["migrate"]["restart"] == "no"
    assert svcs["redis"]["image"].startswith("redis:7")
    for name in ("postgres", "redis", "nginx", *gateways):
        assert "healthcheck" in svcs[name], name
    for name in (*gateways, *workers):
        assert svcs[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name, svc in svcs.items():
        for dep in svc.get("depends_on", {}):
            assert dep in svcs, f"{name} depends on unknown service {dep}"
    node_ids = {svcs[g]["environment"]["VYBE_NODE_ID"] for g in gateways}
    assert len(node_ids) == 2
    nginx_conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert set(re.findall(r"server ([\w-]+):8000", nginx_conf)) == set(gateways)
    mount = svcs["nginx"]["volumes"][0].split(":")[0]
    assert (DEPLOY / mount).resolve() == (DEPLOY / "nginx" / "nginx.conf").resolve()


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _k8s_docs() if d["kind"] == kind}


def test_kubernetes_manifests() -> None:
    """Probes on /readyz and /healthz, preStop within the grace period, PDBs, HPAs, a migrate Job, Secrets."""
    deployments = _by_kind("Deployment")
    gw = deployments["vybe-gateway"]
    pod = gw["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop + drain (<= 2.5 s) + uvicorn's timeout_graceful_shutdown (10 s) + margin.
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + 10 + 2.5 + 5
    assert gw["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert any(e["name"] == "VYBE_NODE_ID" for e in c["env"])
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert set(_by_kind(kind)) >= {"vybe-gateway", "vybe-worker"}, kind
    for pdb in _by_kind("PodDisruptionBudget").values():
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(d["spec"]["selector"]["matchLabels"] == sel for d in deployments.values()), pdb
    for hpa in _by_kind("HorizontalPodAutoscaler").values():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        assert hpa["spec"]["minReplicas"] >= 2
    (job,) = _by_kind("Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    secrets = _by_kind("Secret")
    keys = {k for s in secrets.values() for k in s.get("stringData", {})}
    assert {"VYBE_DATABASE_URL", "VYBE_REDIS_URL"} <= keys and keys & {"VYBE_JWT_PUBLIC_KEY", "VYBE_JWT_SECRET"}
    config_maps = _by_kind("ConfigMap")
    for doc in [*deployments.values(), job]:
        for ctr in _containers(doc):
            for ref in ctr.get("envFrom", []):
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] in secrets
                if "configMapRef" in ref:
                    assert ref["configMapRef"]["name"] in config_maps
            sc = doc["spec"]["template"]["spec"]["securityContext"]
            assert sc["runAsNonRoot"] is True
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_nginx_configs_proxy_websockets() -> None:
    """Both nginx configs (production, local cluster) pass Upgrade/Connection, HTTP/1.1 and long timeouts."""
    prod = (DEPLOY / "nginx" / "nginx.conf").read_text()
    local = load_local_cluster().NGINX_CONF
    for text in (prod, local):
        assert "proxy_http_version 1.1;" in text
        assert "proxy_set_header Upgrade $http_upgrade;" in text
        assert "proxy_set_header Connection $connection_upgrade;" in text
        timeouts = [int(t) for t in re.findall(r"proxy_read_timeout (\d+)s;", text)]
        assert timeouts and min(timeouts) >= 3600


def test_nginx_accepts_production_config(tmp_path: Path) -> None:
    """`nginx -t` accepts deploy/nginx/nginx.conf (gateway hostnames mapped to 127.0.0.1)."""
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx not installed (apt-get install -y nginx-light)")
    text = (DEPLOY / "nginx" / "nginx.conf").read_text()
    text = re.sub(r"server gateway-\d+:8000", "server 127.0.0.1:8000", text).replace("/tmp/", f"{tmp_path}/")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    out = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
