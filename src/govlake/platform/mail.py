"""Mail a rendered report to a steward, or a plain-text notification (an escalation), through
the configured SMTP server (stdlib only).

The HTML is both the body and an attachment, so it can be read in the mail client or saved
and opened in a browser; its charts are embedded, so nothing else travels with it.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from govlake.core.errors import GovlakeError
from govlake.core.settings import Settings


class MailError(GovlakeError, RuntimeError):
    """The mail server could not be reached or refused the report."""


def report_message(*, sender: str, to: str, subject: str, html: str, filename: str) -> EmailMessage:
    """Pure: the message carrying `html` as its body and as the attachment `filename`."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(
        f"{subject}\n\nThis report is HTML: read it in a mail client that shows HTML, or open "
        f"the attached {filename} in a browser.\n"
    )
    message.add_alternative(html, subtype="html")
    message.add_attachment(html, subtype="html", filename=filename)
    return message


def send_report(settings: Settings, *, to: str, subject: str, html: str, filename: str) -> None:
    """Send the report to `to`; raise `MailError` naming the server and the recipient."""
    message = report_message(
        sender=settings.smtp_sender, to=to, subject=subject, html=html, filename=filename
    )
    _deliver(settings, message, what=f"the report to {to}")


def send_mail(settings: Settings, *, to: str, subject: str, text: str) -> None:
    """Send a plain-text message (a notification) to `to`; raise `MailError` naming the server
    and the recipient."""
    message = EmailMessage()
    message["From"] = settings.smtp_sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=settings.smtp_sender.rpartition("@")[2] or None)
    message.set_content(text)
    _deliver(settings, message, what=to)


def _deliver(settings: Settings, message: EmailMessage, *, what: str) -> None:
    """Hand `message` to the configured SMTP server; `MailError` names the server and `what`."""
    server = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                password = settings.smtp_password
                smtp.login(settings.smtp_user, password.get_secret_value() if password else "")
            refused = smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise MailError(f"could not mail {what} through {server}: {exc}") from exc
    if refused:
        raise MailError(f"the mail server {server} refused the recipient(s): {refused}")
