"""The Hub download path for real: ``olah`` serves local git repos as a Hub on loopback.

Every Hub client call runs in a subprocess with its own ``HF_ENDPOINT`` / ``HF_HOME`` /
``HF_HUB_OFFLINE`` (conftest puts this process offline, and huggingface_hub reads those at
import time). olah serves reads only, so ``dreamgym push`` is tested through ``--dry-run``:
the staged folder is exactly what is committed into the served repo here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from dreamgym.agents.controller import LinearController
from dreamgym.cli import main as cli_main
from dreamgym.push import stage_repo

from conftest import make_tiny_model

pytestmark = pytest.mark.slow  # a real Hub-compatible server (olah) in a subprocess

OLAH_CLI = Path(sys.executable).parent / "olah-cli"
if importlib.util.find_spec("olah") is None or not (OLAH_CLI.is_file() or shutil.which("olah-cli")):
    pytest.skip("olah is not installed (pip install 'olah>=0.5.4', in the test extra): "
                "no local Hub server to test downloads against", allow_module_level=True)
if shutil.which("git") is None:
    pytest.skip("git is needed to lay out the served repos", allow_module_level=True)

TINY = "dreamgym-tests/tiny-wm"
PICKLE_ONLY = "dreamgym-tests/pickle-only"
NOT_DREAMGYM = "dreamgym-tests/not-dreamgym"


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _avoid_olah_quirk(repo: Path) -> None:
    """Olah's tree listing answers 500 on a binary blob of 120-150 bytes: keep text files out of that range."""
    for path in repo.rglob("*"):
        if ".git" in path.parts or not path.is_file():
            continue
        size = path.stat().st_size
        if 110 <= size <= 160:
            if path.suffix in (".json", ".md", ".txt"):
                path.write_bytes(path.read_bytes() + b" " * (200 - size))
            else:
                raise AssertionError(f"{path} is {size} bytes, a size olah cannot list")


def _new_repo(mirrors: Path, repo_id: str) -> Path:
    repo = mirrors / "models" / repo_id
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    return repo


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The served repos, a running olah, and the client environment to reach it."""
    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    local = root / "local-tiny-wm"
    make_tiny_model().save_pretrained(local)

    repo = _new_repo(mirrors, TINY)
    stage_repo(local, repo, repo_id=TINY)
    _avoid_olah_quirk(repo)
    first = _commit(repo, "tiny world model")
    with open(repo / "README.md", "a") as card:
        card.write("\nA second revision: only the card changed.\n")
    second = _commit(repo, "edit the card")
    weights = (repo / "model.safetensors").read_bytes()
    (repo / "model.safetensors").write_bytes(weights[: len(weights) // 2])  # a truncated upload
    tampered = _commit(repo, "truncated weights")

    pickled = _new_repo(mirrors, PICKLE_ONLY)
    shutil.copy(local / "config.json", pickled / "config.json")
    torch.save(make_tiny_model().state_dict(), pickled / "pytorch_model.bin")
    _avoid_olah_quirk(pickled)
    _commit(pickled, "pickle weights only")

    other = _new_repo(mirrors, NOT_DREAMGYM)
    (other / "README.md").write_text("# Not a world model\n\n" + "This repo holds no dreamgym files at all.\n" * 8)
    _commit(other, "readme only")

    port = _free_port()
    config = root / "olah.toml"
    config.write_text(textwrap.dedent(f"""\
        [basic]
        host = "127.0.0.1"
        port = {port}
        mirror-netloc = "127.0.0.1:{port}"
        mirror-lfs-netloc = "127.0.0.1:{port}"
        repos-path = "{root / 'repos'}"
        mirrors-path = ["{mirrors}"]
        [accessibility]
        offline = true
        """))
    log = open(root / "olah.log", "wb")
    cli = str(OLAH_CLI) if OLAH_CLI.is_file() else shutil.which("olah-cli")
    server = subprocess.Popen([cli, "-c", str(config)], cwd=root, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/api/models/{TINY}", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers HTTP: up
            except (urllib.error.URLError, ConnectionError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"olah did not start on {endpoint}:\n{(root / 'olah.log').read_text()[-3000:]}")
                time.sleep(0.3)
        env = {
            **os.environ,
            "HF_ENDPOINT": endpoint,
            "HF_HOME": str(root / "hf-home"),
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "SDL_VIDEODRIVER": "dummy",
            "SDL_AUDIODRIVER": "dummy",
        }
        env.pop("HF_TOKEN", None)
        yield dict(env=env, local=local, first=first, second=second, tampered=tampered, root=root)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _client(hub, code: str, offline: bool = False) -> str:
    """Run ``code`` in a fresh interpreter pointed at the server; return its stdout."""
    env = {**hub["env"], "HF_HUB_OFFLINE": "1" if offline else "0"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"client failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


ROLLOUT = """
import hashlib, json, sys
import numpy as np, torch, gymnasium as gym
import dreamgym
from dreamgym import WorldModel
torch.set_num_threads(1)

def rollout(**kwargs):
    env = gym.make("dreamgym/DreamCarRacing-v0", **kwargs)
    obs, _ = env.reset(seed=7)
    digest = hashlib.sha256(np.ascontiguousarray(obs).tobytes())
    for t in range(20):
        action = np.array([np.sin(t / 3), 0.5 + 0.4 * np.cos(t / 5), 0.1 * (t % 3)], dtype=np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        digest.update(np.ascontiguousarray(obs).tobytes())
        digest.update(np.float64(reward).tobytes())
        if terminated or truncated:
            obs, _ = env.reset(seed=t)
    return digest.hexdigest()
"""


def test_pinned_revision_downloads_and_dreams_like_the_local_folder_then_loads_offline(hub):
    sha = hub["first"]
    out = _client(hub, ROLLOUT + f"""
model = WorldModel.from_pretrained({TINY!r}, revision={sha!r})
local = WorldModel.from_pretrained({str(hub['local'])!r})
for (name, a), (_, b) in zip(model.state_dict().items(), local.state_dict().items()):
    assert torch.equal(a, b), name
hub_hash = rollout(model={TINY!r}, revision={sha!r})
local_hash = rollout(model={str(hub['local'])!r})
print(json.dumps({{"hub": hub_hash, "local": local_hash}}))
""")
    hashes = json.loads(out.strip().splitlines()[-1])
    assert hashes["hub"] == hashes["local"]
    snapshots = Path(hub["env"]["HF_HOME"]) / "hub" / "models--dreamgym-tests--tiny-wm" / "snapshots" / sha
    assert (snapshots / "model.safetensors").is_file() and (snapshots / "config.json").is_file()

    # Offline afterwards, the same pin reads from the cache and dreams the same.
    out = _client(hub, ROLLOUT + f"""
from huggingface_hub import constants
assert constants.HF_HUB_OFFLINE
WorldModel.from_pretrained({TINY!r}, revision={sha!r})
print(rollout(model={TINY!r}, revision={sha!r}))
""", offline=True)
    assert out.strip().splitlines()[-1] == hashes["local"]


# olah 0.5.4 answers an unknown revision with a bare 500 (after which it resets the kept-alive
# connection, so that case goes last), and a file missing from an existing repo with
# 401 RepoNotFound; the Hub answers 404 with RevisionNotFound / EntryNotFound, which is what
# dreamgym tells the cases apart by listing the repo and names the revision in every message.

ERROR_CASES = {
    "missing_repo": ("dreamgym-tests/no-such-model", None),
    "pickle_only": (PICKLE_ONLY, None),
    "not_dreamgym": (NOT_DREAMGYM, None),
    "tampered": (TINY, "TAMPERED"),
    "wrong_revision": (TINY, "0123456789abcdef0123456789abcdef01234567"),
}


@pytest.fixture(scope="module")
def load_errors(hub):
    """Each bad source loaded through ``load_world_model`` in one client: {case: (error type, message)}."""
    cases = {name: (repo, hub["tampered"] if rev == "TAMPERED" else rev) for name, (repo, rev) in ERROR_CASES.items()}
    out = _client(hub, f"""
import json
from dreamgym.hub import load_world_model
errors = {{}}
for name, (repo, revision) in {cases!r}.items():
    try:
        load_world_model(repo, revision=revision)
    except Exception as err:
        errors[name] = [type(err).__name__, [c.__name__ for c in type(err).__mro__], str(err)]
    else:
        errors[name] = ["loaded", [], ""]
print(json.dumps(errors))
""")
    return json.loads(out.strip().splitlines()[-1])


def test_wrong_revision_is_file_not_found_naming_the_repo(load_errors):
    kind, mro, message = load_errors["wrong_revision"]
    assert "FileNotFoundError" in mro, (kind, message)
    assert TINY in message


def test_wrong_revision_message_names_the_revision(load_errors):
    kind, mro, message = load_errors["wrong_revision"]
    assert "0123456789abcdef" in message, (kind, message)


def test_missing_repo_names_it(load_errors):
    kind, mro, message = load_errors["missing_repo"]
    assert "FileNotFoundError" in mro, (kind, message)
    assert "dreamgym-tests/no-such-model" in message


@pytest.mark.parametrize(("case", "repo"), [("pickle_only", PICKLE_ONLY), ("not_dreamgym", NOT_DREAMGYM)])
def test_repos_without_dreamgym_files_do_not_load(load_errors, case, repo):
    kind, mro, message = load_errors[case]
    assert kind != "loaded" and repo in message, (kind, message)


def test_pickle_only_repo_is_refused(load_errors):
    kind, mro, message = load_errors["pickle_only"]
    assert kind == "WorldModelFormatError", (kind, message)
    assert "pickle" in message and "pytorch_model.bin" in message


def test_repo_without_config_is_not_a_world_model(load_errors):
    kind, mro, message = load_errors["not_dreamgym"]
    assert kind == "WorldModelFormatError", (kind, message)
    assert "not a dreamgym world model" in message and NOT_DREAMGYM in message


def test_truncated_weights_are_reported_corrupt(load_errors):
    kind, mro, message = load_errors["tampered"]
    assert kind == "WorldModelFormatError", (kind, message)
    assert "corrupt" in message and TINY in message


def test_the_second_revision_loads_too(hub):
    out = _client(hub, f"""
from dreamgym import WorldModel
from huggingface_hub import hf_hub_download
WorldModel.from_pretrained({TINY!r}, revision={hub['second']!r})
print(open(hf_hub_download({TINY!r}, "README.md", revision={hub['second']!r})).read()[-60:])
""")
    assert "only the card changed" in out


# ------------------------------------------------------------------ dreamgym push --dry-run
def _model_dir_with_extras(tmp_path: Path) -> Path:
    model_dir = tmp_path / "model"
    make_tiny_model().save_pretrained(model_dir)
    (model_dir / "metrics.json").write_text(json.dumps({"vae_recon_mse": 0.01, "rnn_nll": -1.5}))
    (model_dir / "reconstruction.png").write_bytes(b"\x89PNG fake preview" * 20)
    (model_dir / "dream.gif").write_bytes(b"GIF89a fake" * 20)
    (model_dir / "notes.txt").write_text("not shipped")
    return model_dir


def test_push_dry_run_stages_the_repo_with_card_metadata(tmp_path, capsys):
    model_dir = _model_dir_with_extras(tmp_path)
    controller = LinearController(obs_dim=8 + 16)
    controller.save(tmp_path / "controller")
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"mean": 812.345, "std": 90.1, "episodes": 100, "env_id": "CarRacing-v3",
                                   "agent": "controller"}))
    out = tmp_path / "staged"
    code = cli_main(["push", str(model_dir), "--repo-id", "org/tiny-wm", "--controller", str(tmp_path / "controller"),
                     "--results", str(results), "--dry-run", str(out)])
    assert code == 0
    staged = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert staged == sorted([
        "README.md", "config.json", "model.safetensors", "metrics.json", "reconstruction.png", "dream.gif",
        "results.json", "controller/controller.json", "controller/controller.safetensors",
    ])
    assert "dry run" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: dreamgym" in front
    for tag in ("world-model", "reinforcement-learning", "gymnasium", "CarRacing-v3", "dreamgym/DreamCarRacing-v0"):
        assert f"- {tag}" in front
    assert "model-index:" in front and "type: mean_reward" in front and "812.35 +/- 90.10" in front
    assert 'model="org/tiny-wm"' in card

    # Without results: no model-index, and the staged model loads back as it was saved.
    plain = tmp_path / "plain"
    assert cli_main(["push", str(model_dir), "--repo-id", "org/tiny-wm", "--dry-run", str(plain)]) == 0
    assert "model-index" not in (plain / "README.md").read_text()
    assert not (plain / "results.json").exists() and not (plain / "controller").exists()
    from dreamgym import WorldModel
    reloaded = WorldModel.from_pretrained(plain)
    for name, tensor in make_tiny_model().state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_push_refuses_a_folder_that_is_not_a_world_model(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (bad / "model.safetensors").write_bytes(b"garbage" * 50)
    code = cli_main(["push", str(bad), "--repo-id", "org/x", "--dry-run", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing to push" in err
    assert not (tmp_path / "out" / "README.md").exists()
    assert cli_main(["push", str(bad), "--repo-id", "no-slash", "--dry-run", str(tmp_path / "out")]) == 2
