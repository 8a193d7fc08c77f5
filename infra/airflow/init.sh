#!/bin/bash
# airflow-init: bring the metadata database to this Airflow's schema, then give the admin the
# password from the .env file (the simple auth manager otherwise generates one and prints it).
set -euo pipefail

airflow db migrate

python - <<'PY'
import json
import os
from pathlib import Path

path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
users = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
passwords = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
for entry in users.split(","):
    name = entry.split(":")[0].strip()
    passwords[name] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(passwords))
path.chmod(0o600)
print(f"simple auth manager: password set for {', '.join(sorted(passwords))}")
PY
