"""Create the lakehouse bucket once SeaweedFS answers (idempotent): the `s3-init` service.

Reads the same `AWS_*` variables as the platform (endpoint, keys, region) and `S3_BUCKET`;
exits non-zero when the server does not answer in time or refuses the keys, so the services
that depend on it do not start against a store they cannot write.
"""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


def main() -> int:
    bucket = os.environ.get("S3_BUCKET", "govlake")
    deadline = time.monotonic() + float(os.environ.get("S3_WAIT_SECONDS", "120"))
    client = boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}),
    )  # fmt: skip
    while True:
        try:
            client.head_bucket(Bucket=bucket)
            print(f"bucket {bucket} exists")
            return 0
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                client.create_bucket(Bucket=bucket)
                print(f"created bucket {bucket}")
                return 0
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                print(f"the S3 store refused the keys: {exc}", file=sys.stderr)
                return 2
            error: Exception = exc
        except BotoCoreError as exc:  # not listening yet, or the connection dropped
            error = exc
        if time.monotonic() > deadline:
            print(f"the S3 store did not answer: {error}", file=sys.stderr)
            return 1
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
