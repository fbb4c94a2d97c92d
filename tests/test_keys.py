"""API keys against each other: jobs belong to the key that submitted them, admin keys for server-wide
changes, keys from files and the environment (never on the command line, never logged)."""

from __future__ import annotations

import logging

import pytest
import requests
from conftest import running

from glide_api.cli import build_parser
from glide_api.cli.serve import serve_config
from glide_api.config import ServiceConfig
from glide_api.errors import InvalidParameter
from glide_api.server import create_app
from glide_api.server.auth import key_id

K1, K2, ADMIN = "sk-first-0123456789", "sk-second-9876543210", "sk-admin-abcdef0123"
FAST = {"size": 32, "steps": "2"}
UNKNOWN = "0" * 32


@pytest.fixture(scope="module")
def keyed_url(small_pipeline, tmp_path_factory):
    """K1 given as a setting, K2 and the admin key read from files."""
    folder = tmp_path_factory.mktemp("keys")
    (folder / "keys").write_text(f"# the second client\n\n  {K2}  \n")
    (folder / "admin").write_text(f"{ADMIN}\n")
    config = ServiceConfig(
        data_dir="none",
        api_keys=(K1,),
        api_keys_file=str(folder / "keys"),
        admin_keys_file=str(folder / "admin"),
        base_steps="2",
        upsample_steps="2",
    )
    with running(create_app(config, pipeline=small_pipeline)) as url:
        yield url


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def generate(url: str, key: str, *, wait: bool = True) -> dict:
    headers = bearer(key) | ({} if wait else {"Prefer": "respond-async"})
    r = requests.post(f"{url}/v1/generations", json={"prompt": "mine", **FAST}, headers=headers, timeout=60)
    assert r.status_code == (200 if wait else 202), r.text
    return r.json()


def job_routes(job_id: str) -> list[tuple[str, str]]:
    """Every route that takes a job id."""
    return [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("GET", f"/v1/jobs/{job_id}/images/0.png"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
    ]


def listed(url: str, key: str) -> set[str]:
    r = requests.get(f"{url}/v1/jobs", headers=bearer(key), timeout=10)
    assert r.status_code == 200, r.text
    return {job["id"] for job in r.json()["jobs"]}


def test_another_key_gets_the_same_404_as_for_an_unknown_id_on_every_job_route(keyed_url) -> None:
    job = generate(keyed_url, K1)
    for (method, path), (_, unknown_path) in zip(job_routes(job["id"]), job_routes(UNKNOWN), strict=True):
        theirs = requests.request(method, keyed_url + path, headers=bearer(K2), timeout=10)
        unknown = requests.request(method, keyed_url + unknown_path, headers=bearer(K2), timeout=10)
        assert theirs.status_code == unknown.status_code == 404, path
        expected = unknown.json()["error"]
        assert theirs.json()["error"] == expected | {
            "message": expected["message"].replace(UNKNOWN, job["id"])
        }
        mine = requests.request(method, keyed_url + path, headers=bearer(K1), timeout=30)
        assert mine.status_code == 200, (path, mine.text)
        assert "owner" not in mine.text and key_id(K1) not in mine.text and K1 not in mine.text


def test_a_key_lists_only_its_own_jobs_and_an_admin_key_every_job(keyed_url) -> None:
    mine, theirs = generate(keyed_url, K1)["id"], generate(keyed_url, K2)["id"]
    assert mine in listed(keyed_url, K1) and theirs not in listed(keyed_url, K1)
    assert theirs in listed(keyed_url, K2) and mine not in listed(keyed_url, K2)
    assert {mine, theirs} <= listed(keyed_url, ADMIN)
    for method, path in job_routes(mine):
        assert (
            requests.request(method, keyed_url + path, headers=bearer(ADMIN), timeout=30).status_code == 200
        )


def test_another_key_cannot_cancel_a_job(keyed_url) -> None:
    job = generate(keyed_url, K1, wait=False)
    r = requests.post(f"{keyed_url}/v1/jobs/{job['id']}/cancel", headers=bearer(K2), timeout=10)
    assert r.status_code == 404
    with requests.get(
        f"{keyed_url}/v1/jobs/{job['id']}/events", headers=bearer(K1), stream=True, timeout=60
    ) as events:
        assert "event: succeeded" in events.text
    done = requests.get(f"{keyed_url}/v1/jobs/{job['id']}", headers=bearer(K1), timeout=10).json()
    assert done["status"] == "succeeded"


def test_jobs_of_the_original_and_openai_routes_belong_to_their_key_too(keyed_url) -> None:
    legacy = requests.get(
        f"{keyed_url}/image", params={"size": 32, "prompt": "x"}, headers=bearer(K1), timeout=60
    )
    assert legacy.status_code == 200, legacy.text
    path = f"/v1/jobs/{legacy.json()['job_id']}"
    assert requests.get(keyed_url + path, headers=bearer(K2), timeout=10).status_code == 404
    assert requests.get(keyed_url + path, headers=bearer(K1), timeout=10).status_code == 200
    openai = requests.post(
        f"{keyed_url}/v1/images/generations",
        json={"prompt": "x", "size": "32x32", "response_format": "url", "steps": "2"},
        headers=bearer(K1),
        timeout=60,
    )
    assert openai.status_code == 200, openai.text
    image_url = openai.json()["data"][0]["url"]
    assert requests.get(image_url, headers=bearer(K2), timeout=10).status_code == 404
    mine = requests.get(image_url, headers=bearer(K1), timeout=10)
    assert mine.status_code == 200 and mine.headers["Content-Type"] == "image/png"


def test_server_wide_step_changes_need_an_admin_key(keyed_url) -> None:
    def steps() -> tuple[str, str]:
        defaults = requests.get(f"{keyed_url}/v1/settings", headers=bearer(K1), timeout=10).json()["defaults"]
        return defaults["steps"], defaults["upsample_steps"]

    before = steps()
    for route in ("basemodel", "upmodel"):
        # Refused before the parameter is even checked: 5000 is past max_steps.
        for value in (5, 5000):
            r = requests.post(f"{keyed_url}/{route}?diffusion_steps={value}", headers=bearer(K1), timeout=10)
            assert r.status_code == 403, r.text
            error = r.json()["error"]
            assert error["code"] == "forbidden" and error["type"] == "invalid_request_error"
            assert "admin key" in error["message"] and "admin_keys" in error["message"]
        assert steps() == before
        over = requests.post(f"{keyed_url}/{route}?diffusion_steps=5000", headers=bearer(ADMIN), timeout=10)
        assert over.status_code == 400 and over.json()["error"]["param"] == "diffusion_steps"
        ok = requests.post(f"{keyed_url}/{route}?diffusion_steps=2", headers=bearer(ADMIN), timeout=10)
        assert ok.status_code == 200, ok.text
    assert steps() == ("2", "2")


def test_without_keys_every_client_sees_every_job_and_may_set_steps(server_url) -> None:
    r = requests.post(f"{server_url}/v1/generations", json={"prompt": "shared", **FAST}, timeout=60)
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    jobs = requests.get(f"{server_url}/v1/jobs", timeout=10).json()["jobs"]
    assert job_id in {job["id"] for job in jobs}
    for method, path in job_routes(job_id):
        assert requests.request(method, server_url + path, timeout=30).status_code == 200, path
    assert requests.post(f"{server_url}/basemodel?diffusion_steps=2", timeout=10).status_code == 200


# ---- where keys come from -------------------------------------------------------------------------


def test_keys_files_hold_one_key_a_line_skipping_comments_and_blank_lines(tmp_path) -> None:
    keys, admin = tmp_path / "keys", tmp_path / "admin"
    keys.write_text("# clients\n\nsk-a\n  sk-b  \n")
    admin.write_text("sk-root\n")
    config = ServiceConfig(api_keys=("sk-flag",), api_keys_file=str(keys), admin_keys_file=str(admin))
    assert config.all_api_keys == {"sk-flag", "sk-a", "sk-b", "sk-root"}  # admin keys are API keys too
    assert config.all_admin_keys == {"sk-root"}
    from_env = ServiceConfig.load(
        env={"GLIDE_API_API_KEYS_FILE": str(keys), "GLIDE_API_ADMIN_KEYS": "sk-env"}
    )
    assert from_env.all_api_keys == {"sk-a", "sk-b", "sk-env"} and from_env.all_admin_keys == {"sk-env"}


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        (None, "cannot read"),
        ("", "holds no keys"),
        ("# sk-commented-out\n\n", "holds no keys"),
        (b"\xff", "UTF-8"),
    ],
)
def test_an_unreadable_or_empty_keys_file_stops_the_start_naming_the_setting(tmp_path, content, rule) -> None:
    path = tmp_path / "keys"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    for setting in ("api_keys_file", "admin_keys_file"):
        with pytest.raises(InvalidParameter) as caught:
            ServiceConfig.from_mapping({setting: str(path)})
        assert caught.value.param == setting and rule in str(caught.value) and str(path) in str(caught.value)
        assert "sk-commented-out" not in str(caught.value)


def test_keys_stay_out_of_the_config_repr_public_settings_and_logs(small_pipeline, tmp_path, caplog) -> None:
    path = tmp_path / "keys"
    path.write_text("sk-from-file\n")
    config = ServiceConfig(api_keys=("sk-flag",), api_keys_file=str(path), admin_keys=("sk-admin",))
    shown = f"{config!r} {config.public_dict()}"
    assert not any(key in shown for key in ("sk-flag", "sk-from-file", "sk-admin"))
    assert config.public_dict()["api_keys"] == "3 configured"
    with caplog.at_level(logging.DEBUG), running(create_app(config, pipeline=small_pipeline)) as url:
        requests.post(
            f"{url}/v1/generations", json={"prompt": "x", **FAST}, headers=bearer("sk-from-file"), timeout=60
        )
        requests.post(f"{url}/basemodel?diffusion_steps=2", headers=bearer("sk-flag"), timeout=10)
    assert caplog.text and not any(key in caplog.text for key in ("sk-flag", "sk-from-file", "sk-admin"))


def test_serve_reads_keys_from_a_file_so_its_command_line_holds_none(tmp_path, monkeypatch) -> None:
    for name in ("GLIDE_API_API_KEYS", "GLIDE_API_ADMIN_KEYS", "GLIDE_API_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "keys"
    path.write_text("sk-secret-in-file\n")
    argv = ["serve", "--api-keys-file", str(path), "--admin-keys-file", str(path)]
    config = serve_config(build_parser().parse_args(argv))
    assert config.all_api_keys == config.all_admin_keys == {"sk-secret-in-file"}
    assert not any("sk-secret" in arg for arg in argv)


def test_keys_given_as_flags_warn_that_ps_shows_them_without_logging_them(monkeypatch, caplog) -> None:
    monkeypatch.delenv("GLIDE_API_CONFIG", raising=False)
    with caplog.at_level(logging.WARNING):
        config = serve_config(build_parser().parse_args(["serve", "--api-keys", "sk-on-argv"]))
    assert config.all_api_keys == {"sk-on-argv"}
    assert "--api-keys" in caplog.text and "ps" in caplog.text and "--api-keys-file" in caplog.text
    assert "sk-on-argv" not in caplog.text
