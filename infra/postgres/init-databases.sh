#!/bin/sh
# Creates the two databases on the one PostgreSQL server, each owned by its own login role:
# `airflow` (Airflow's metadata) and `govlake` (the platform state: access requests, grants,
# consumers, tokens, the audit journal). The official postgres image runs this once, when the
# data volume is empty; it is idempotent, so it can also be run by hand against an existing server.
#
# Passwords come from the environment and go through psql variables (:'name'), so quotes in
# them cannot break the SQL. Role and database names can be overridden (the tests do).
set -eu

: "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}"
: "${PLATFORM_DB_PASSWORD:?PLATFORM_DB_PASSWORD is not set}"
airflow_user="${AIRFLOW_DB_USER:-airflow}"
platform_user="${PLATFORM_DB_USER:-govlake}"

psql -v ON_ERROR_STOP=1 --no-psqlrc \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v airflow_user="$airflow_user" -v airflow_password="$AIRFLOW_DB_PASSWORD" \
    -v platform_user="$platform_user" -v platform_password="$PLATFORM_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'airflow_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'airflow_user') \gexec
ALTER ROLE :"airflow_user" WITH LOGIN PASSWORD :'airflow_password';
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', :'airflow_user', :'airflow_user', 'UTF8')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'airflow_user') \gexec

SELECT format('CREATE ROLE %I LOGIN', :'platform_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'platform_user') \gexec
ALTER ROLE :"platform_user" WITH LOGIN PASSWORD :'platform_password';
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', :'platform_user', :'platform_user', 'UTF8')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'platform_user') \gexec

-- Only the owner may connect: the platform database holds consumer tokens and the audit journal.
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', :'airflow_user') \gexec
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', :'platform_user') \gexec
SQL
