#!/bin/sh
# SeaweedFS for the lakehouse: master, volume server, filer and the S3 gateway in one process,
# in the foreground. Compose cannot template a file, so the S3 identities file is written here
# from the environment; with an identities file SeaweedFS enforces the keys (without one it
# accepts any). Keep the keys to letters and digits: they are written into JSON as they are.
set -eu

: "${S3_ACCESS_KEY:?S3_ACCESS_KEY is not set}"
: "${S3_SECRET_KEY:?S3_SECRET_KEY is not set}"
config="${S3_IDENTITIES_FILE:-/tmp/s3.json}"

umask 077
cat > "$config" <<JSON
{
  "identities": [
    {
      "name": "govlake",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
JSON

exec "${WEED:-weed}" server \
    -dir="${WEED_DIR:-/data}" \
    -ip="${WEED_IP:-s3}" -ip.bind=0.0.0.0 \
    -master.telemetry=false \
    -master.volumeSizeLimitMB="${WEED_VOLUME_SIZE_LIMIT_MB:-1024}" \
    -volume.max=0 \
    -filer \
    -s3 -s3.port=8333 -s3.config="$config" \
    -s3.port.iceberg=0 -s3.port.lance=0
