"""A real Prometheus server for one test (Debian's ``prometheus`` package): 127.0.0.1, a free
port, its own TSDB in a temp dir, scraping the targets given every second and evaluating
rule files every second. It stops itself after ``max_seconds`` (``timeout``), so a killed
test leaves no server behind.

    with PrometheusServer(tmp_path, {"event-router": ["127.0.0.1:8081"]},
                          rule_files=[REPO / "monitoring/alerts.yaml"]) as prom:
        prom.query("up")            # the result list of /api/v1/query
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError("prometheus not found: apt-get install prometheus (.ci/run does)")
    return path


class PrometheusServer:
    def __init__(
        self,
        workdir: Path,
        targets: dict[str, list[str]],
        *,
        rule_files: list[Path] | None = None,
        max_seconds: int = 300,
        lookback: str = "15m",
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_seconds = max_seconds
        self.lookback = lookback
        self.config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(p) for p in rule_files or []],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": addrs}]}
                for job, addrs in targets.items()
            ],
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"

    def start(self, timeout: float = 30.0) -> None:
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(self.config))
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                "timeout",
                str(self.max_seconds),
                prometheus_binary(),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--query.lookback-delta={self.lookback}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready in {timeout}s: {self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise AssertionError(f"prometheus /api/v1/{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector (at ``at``, a Unix time, or now)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        data = self.api("alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
