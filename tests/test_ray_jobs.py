"""`ray job submit --working-dir . -- m3fmarl sweep experiments/fig5.yaml --budget smoke --address auto`
against a real Ray cluster started with `ray start --head` (its own ports and temp dir, token auth)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from m3fmarl.experiments import load_experiment
from tests.conftest import REPO

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(url, timeout=5).close()
        return True
    except urllib.error.HTTPError:
        return True  # it answers (authentication is the job client's business)
    except OSError:
        return False


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head (2 CPUs) of this test only; stopped by SIGTERM to its `ray start --block`."""
    import secrets

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(32),
               # Ray Client's per-driver server may take longer than the default 30 s to answer on
               # a machine busy with the rest of the suite.
               RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S="120")
    gcs, dashboard, client, agent = _free_ports(4)
    temp = Path(f"/tmp/rj-{os.getpid()}-{gcs}")  # short: Ray's socket paths live under it
    tmp_path = tmp_path_factory.mktemp("ray-head")
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--port={gcs}",
         f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
         f"--dashboard-agent-listen-port={agent}", f"--temp-dir={temp}", "--disable-usage-stats"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([str(BIN / "ray"), "health-check", "--address", f"127.0.0.1:{gcs}"], env=env,
                             capture_output=True, timeout=30).returncode != 0:
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Ray head not healthy after 120 s"
            time.sleep(1)
        while not (_answers(f"http://127.0.0.1:{dashboard}/api/version")  # the Jobs API and the Ray
                   and _listens(client)):                                  # Client server come up later
            assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Ray dashboard (Jobs API) or client server not up after 120 s"
            time.sleep(1)
        yield env, f"http://127.0.0.1:{dashboard}", f"ray://127.0.0.1:{client}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_runs_the_smoke_sweep(ray_head, tmp_path):
    env, dashboard, _ = ray_head
    out = tmp_path / "fig5-smoke"  # absolute: the job runs in a copy of the working dir
    t0 = time.monotonic()
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", dashboard, "--working-dir", ".", "--",
         "m3fmarl", "sweep", "experiments/fig5.yaml", "--budget", "smoke", "--address", "auto", "--out", str(out),
         "--report-every", "10"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - t0
    text = job.stdout + job.stderr
    assert job.returncode == 0, text[-4000:]
    assert "succeeded" in text
    assert "ray: 2 CPUs on 1 node(s)" in text  # the driver joined the running cluster
    assert "all 5 trials finished" in text
    fig5 = load_experiment(REPO / "experiments" / "fig5.yaml", "smoke").trials
    assert [t.short_name for t in fig5] == [f"{p}__m3fppo__N5__s0" for p in
                                            ("two-gaussians", "formation", "beach-bar", "potential", "foraging")]
    trials = sorted(p.name for p in (out / "trials").iterdir())
    assert trials == sorted(t.name for t in fig5)
    for name in trials:
        ev = json.loads((out / "trials" / name / "evaluation.json").read_text())
        assert ev["trial"] == name and ev["iterations"] == 2
        assert [(r["num_minors"], r["execution"], r["episodes"]) for r in ev["results"]] == [(5, "centralized", 5)]
    assert len((out / "summary.csv").read_text().splitlines()) == 6
    print(f"ray job submit (fig5 smoke, 5 trials): {seconds:.0f} s")


def test_sweep_through_ray_client(ray_head, tmp_path):
    """`m3fmarl sweep --address ray://host:port` (Ray Client) against the same cluster."""
    env, _, client = ray_head
    exp = tmp_path / "client.yaml"
    exp.write_text("""\
id: client
problems: [potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0, 1]
    iterations: 2
    settings:
      m3fppo: {train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}
evaluation: {episodes: 5}
""")
    out = tmp_path / "out"
    p = subprocess.run([str(BIN / "m3fmarl"), "sweep", str(exp), "--budget", "paper", "--address", client,
                        "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "ray: 2 CPUs on 1 node(s)" in p.stdout and "all 2 trials finished" in p.stdout
    names = [t.name for t in load_experiment(exp, "paper").trials]
    assert [n.split("__2it__")[0] for n in names] == [f"potential__m3fppo__N5__s{seed}" for seed in (0, 1)]
    for name in names:
        assert (out / "trials" / name / "evaluation.json").is_file()
    assert re.search(rf"{re.escape(names[1])} +finished +2/2 +4k", p.stdout)  # final table, from the files
