"""Names `vulture` cannot see used, each with who uses it: Jinja templates, Great
Expectations' registry, typer's option names, the platform database's columns, the tests.

vulture reads this file beside the code (it is one of its `paths` in pyproject.toml); nothing
imports it. Framework callbacks (typer commands, FastAPI routes, validators, event listeners,
Airflow tasks) are left out by their decorators in `[tool.vulture]` instead.
"""

# ruff: noqa: B018

from govlake_tools import demo, generate, pgserver
from govlake_tools.bench import results

from expectations import custom, runner
from govlake.core.catalog import Catalog, Resource
from govlake.governance.changes import DutyChange
from govlake.platform.database import AuditEntry, Grant, Subscription, Token, WebhookDelivery
from govlake.reports import quality
from govlake.reports.scorecard import QualityPass
from govlake.reports.sharing import DepartmentReport, PlatformSummary, ResourceProvision
from govlake.sharing import access, receivers, subscriptions
from govlake.sharing.server import files, gate, open_api, subscriptions_api, tables, token_api
from govlake_app.cli import serve
from jobs import maintenance

# Great Expectations registers metric providers and expectations when their classes are
# defined, finds them by name and reads these class attributes.
custom.ColumnValuesKeepRowRule
custom.ExpectColumnValuesToKeepRowRule
custom.ColumnValuesValidCitizenId
custom.ExpectColumnValuesToBeValidCitizenId
custom.ColumnValuesValidCreditCode
custom.ExpectColumnValuesToBeValidCreditCode
custom.ColumnValuesKeepRowRule.condition_metric_name
custom.ColumnValuesKeepRowRule.condition_value_keys
custom.ColumnValuesKeepRowRule.filter_column_isnull
custom.ExpectColumnValuesToKeepRowRule.map_metric
custom.ExpectColumnValuesToKeepRowRule.success_keys
custom.ExpectColumnValuesToKeepRowRule.args_keys
custom.ExpectColumnValuesToKeepRowRule.library_metadata
runner._context().variables.progress_bars  # read by the data context

# Catalogue fields `govlake catalog show` reads by name; Catalog.themes: tests/test_catalog.py.
Resource.category
Resource.purposes
Resource.sharing_method
Catalog.themes

# Columns of the platform database: written by the code, read by SQL and by operators.
DutyChange.registered_by
Token.issued_at
Grant.revoke_reason
WebhookDelivery.last_attempt_at
AuditEntry.prev_hash
# Read by name (getattr) where requests_api.view_of fills an answer's field of that name.
Subscription.created_by
WebhookDelivery.delivered_at

# Read by the report templates (src/govlake/reports/templates).
QualityPass.by_dimension  # scorecard.html.j2
ResourceProvision.role  # sharing.html.j2
ResourceProvision.state_at_end  # sharing.html.j2
DepartmentReport.has_activity  # sharing.html.j2
PlatformSummary.top_resources  # sharing_platform.html.j2
quality.DimensionFigure.pass_rate  # quality.html.j2, as ResourceQuality and QualityReport
quality.DimensionFigure.row_pass_rate  # quality.html.j2
quality.QuarantineRule.example  # quality.html.j2
quality.FindingExample.authority_value  # quality.html.j2
quality.FindingExample.provider_value  # quality.html.j2
quality.Finding.new_in_period  # quality.html.j2
quality.Finding.examples  # quality.html.j2
quality.ResourceQuality.failures_total  # quality.html.j2
quality.ResourceQuality.failing_rules  # quality.html.j2
quality.QualityReport.disagreeing  # quality.html.j2
# The shares a resource's line would show, asserted by tests/test_sharing_report.py.
ResourceProvision.publication_on_time_share
ResourceProvision.quality_share

# httpcore and uvicorn call these overrides: the pinned webhook backend refuses unix sockets;
# httpx's transport reads `_pool`; uvicorn's h11 protocol calls `send_400_response`.
receivers._PinnedBackend.connect_unix_socket
receivers.PinnedTransport._pool
gate._journaling_h11(...).send_400_response

# Wire fields: the protocol's query body (predicate hints, read and ignored as the protocol
# allows), a subscription's and a delivery's JSON answer, a notice's record (which
# notification row holds it).
tables.QueryBody.predicateHints
tables.QueryBody.jsonPredicateHints
subscriptions_api.SubscriptionView.created_by
subscriptions_api.DeliveryView.last_result
subscriptions_api.DeliveryView.delivered_at
subscriptions.Notice.channel
subscriptions.Notice.notification_id
# The token endpoint's answers (RFC 6749 §5.1, §5.2), described in its OpenAPI document.
token_api.TokenAnswer.access_token
token_api.TokenAnswer.token_type
token_api.ErrorAnswer.error_description

# Read by the tests only: the public routes' journal actions, the generator's defect kinds,
# dropping a test database, and the benchmark report's free-text fields written into
# bench.json.
open_api.OPEN_ACTIONS
generate.DEFECT_RULES
pgserver.PostgresServer.drop_database
results.Measurement.notes
results.Measurement.details

# http.server and uvicorn call these: the demo's webhook receiver handles POST and keeps quiet;
# the CLI stops its in-process sharing server by setting uvicorn's `should_exit`.
demo.Handler.do_POST
demo.Handler.log_message
serve._server.should_exit

# A maintenance run's result, printed by the DAG task's log and read by the tests.
maintenance.Maintained.files_compacted
maintenance.Maintained.files_removed

# starlette's FileResponse reads the chunk size of the files the sharing server sends.
files.FilePart.chunk_size
# uvicorn imports these by name in each worker of `govlake share serve --workers N`: the app
# factory and the journaling h11 protocol. `access.authenticate` is the tests' way in.
serve.worker_app
gate.WorkerH11
access.authenticate
