"""Signed outgoing webhooks (Standard Webhooks), guarded against server-side request forgery.

One ``send`` is one attempt; the outbox relay schedules retries with :mod:`delivery.backoff`. Status mapping:

* 2xx: delivered.
* 410 Gone: the receiver asks us to stop, so the target is disabled and the delivery not retried.
* 429, 5xx, timeouts, connection and TLS errors: retried, honouring ``Retry-After`` when sent.
* 3xx: a failure; redirects are never followed (a redirect to an internal address would bypass the SSRF check,
  and Standard Webhooks says a webhook URL must answer directly). Retried, like other 4xx.
* other 4xx (400, 401, 403, 404 …): retried. They are nearly always a receiver misconfiguration (wrong secret,
  route not deployed yet) that its owner can fix within the ~28 h schedule; giving up at once would lose the
  prompt. This matches Svix and the Standard Webhooks recommendation that only 2xx counts as success.
* a target the SSRF guard refuses, a missing secret, or an unserialisable payload: failed, not retried,
  because the next attempt would be refused the same way.

The target URL may carry a token in its path (chat services do this), so only scheme and host are ever logged
or put into an outcome's detail.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from pydantic import field_validator
from standardwebhooks.webhooks import Webhook

from delivery.ssrf import CheckedTarget, ForbiddenTarget, TargetUnresolvable, check_target, parse_networks
from stridecare.crypto import Vault
from stridecare.db.models import Athlete
from stridecare.plugins import ChannelOptions, DeliveryOutcome, NoTarget, OutgoingMessage, SettingsChannel, Target
from stridecare.settings import Settings

log = logging.getLogger(__name__)

USER_AGENT = "stridecare-webhooks/1"
# Dual-stack hosts often list an unreachable IPv6 address first; a few fallbacks, not an unbounded scan.
MAX_ADDRESSES_TRIED = 3
_SNIPPET_CHARS = 200
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or HTTP-date); None if absent or invalid."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # HTTP-dates are always GMT; parsedate returns naive for "-0000".
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _origin(url: httpx.URL | str) -> str:
    """Scheme and host of a URL, the part that is safe to log."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        return f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}"
    except (httpx.InvalidURL, ValueError):
        return "(unparseable URL)"


def _snippet(data: bytes) -> str:
    text = _UNPRINTABLE.sub(" ", data.decode("utf-8", "replace")).strip()
    return text[:_SNIPPET_CHARS]


class WebhookOptions(ChannelOptions):
    """An athlete's webhook: the endpoint, its signing secret (the vault's ciphertext), and when the receiver
    switched it off (410 Gone)."""

    url: str
    secret: str | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")) or _UNPRINTABLE.search(value) or " " in value:
            raise ValueError("the webhook URL must start with https:// (or http:// on a trusted network)")
        return value


class WebhookChannel(SettingsChannel):
    """Posts ``message.payload`` as signed JSON (Standard Webhooks) to a checked public or allowed address."""

    name = "webhook"
    address_key = "url"
    secret_keys = ("secret",)
    options_schema = WebhookOptions

    def __init__(self, settings: Settings, *, tls_context: ssl.SSLContext | None = None) -> None:
        """Build the channel; ``tls_context`` replaces the default certificate store (certifi) when given."""
        super().__init__(settings)
        self._allowed = parse_networks(settings.webhook_allowed_networks)
        self._timeout_s = settings.webhook_timeout_s
        self._max_response_bytes = settings.webhook_max_response_bytes
        self._tls: ssl.SSLContext | bool = tls_context if tls_context is not None else True

    def target(self, athlete: Athlete, vault: Vault) -> Target:
        """The endpoint and its decrypted signing secret."""
        options = self.options(athlete)
        if not options.get("url") or options.get("disabled_at"):
            raise NoTarget("webhook endpoint removed or disabled")
        secret = vault.decrypt(str(options["secret"])) if options.get("secret") else None
        return Target(str(options["url"]), secret)

    def send(self, message: OutgoingMessage, target: str, secret: str | None) -> DeliveryOutcome:
        """Attempt one delivery of ``message`` to the webhook URL ``target``, signed with ``secret`` (whsec_).

        Never raises for network trouble or a refused target; the outcome says whether and when to retry.
        """
        if not secret:
            return DeliveryOutcome(ok=False, retry=False, detail="no signing secret for this webhook target")
        try:
            signer = Webhook(secret)
        except Exception:  # binascii.Error, EmptyWebhookSecretError …: never echo the secret itself
            return DeliveryOutcome(ok=False, retry=False, detail="the webhook secret is not a valid whsec_ secret")
        try:
            body = json.dumps(message.payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            return DeliveryOutcome(ok=False, retry=False, detail=f"payload is not JSON-serialisable: {exc}")

        # Resolve and check on every attempt: the DNS answer may have changed since the last one.
        try:
            checked = check_target(target, self._allowed)
        except ForbiddenTarget as exc:
            log.warning("webhook %s refused: %s", message.message_id, exc.reason)
            return DeliveryOutcome(ok=False, retry=False, detail=f"target refused: {exc.reason}")
        except TargetUnresolvable as exc:
            return DeliveryOutcome(ok=False, retry=True, detail=str(exc))

        # A fresh timestamp per attempt (receivers reject ones older than 5 min); the id stays the same so the
        # receiver can de-duplicate. Wall clock on purpose: a simulation clock would fail every verification.
        timestamp = datetime.now(UTC)
        headers = {
            "Host": checked.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            # We only look at the status; ask for an uncompressed body so the size cap means what it says.
            "Accept-Encoding": "identity",
            "webhook-id": message.message_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signer.sign(message.message_id, timestamp, body),
        }
        outcome = self._post(checked, headers, body.encode("utf-8"))
        log.info(
            "webhook %s to %s: %s (%s)",
            message.message_id,
            _origin(checked.url),
            "ok" if outcome.ok else "failed",
            outcome.detail,
        )
        return outcome

    def _post(self, checked: CheckedTarget, headers: dict[str, str], body: bytes) -> DeliveryOutcome:
        extensions: dict[str, str] = {}
        if checked.sni_hostname is not None and checked.url.scheme == "https":
            # We connect to an IP; TLS must still send and verify the *name* (the context checks hostnames).
            extensions["sni_hostname"] = checked.sni_hostname
        timeout = httpx.Timeout(self._timeout_s, connect=min(self._timeout_s, 5.0))
        where = _origin(checked.url)
        last_error = "no address to connect to"
        for address in checked.addresses[:MAX_ADDRESSES_TRIED]:
            # A client per attempt: a pooled connection verified for another name on this IP is never reused.
            try:
                with (
                    httpx.Client(verify=self._tls, timeout=timeout, follow_redirects=False, trust_env=False) as client,
                    client.stream(
                        "POST", checked.url_for(address), content=body, headers=headers, extensions=extensions
                    ) as response,
                ):
                    return self._judge(response, where)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent yet, so trying the next address cannot duplicate the delivery.
                last_error = self._describe_connect_error(exc, where, address)
                continue
            except httpx.TimeoutException as exc:
                return DeliveryOutcome(ok=False, retry=True, detail=f"timed out talking to {where}: {exc!r}")
            except (httpx.HTTPError, OSError) as exc:
                return DeliveryOutcome(ok=False, retry=True, detail=f"error talking to {where}: {exc!r}")
        return DeliveryOutcome(ok=False, retry=True, detail=last_error)

    @staticmethod
    def _describe_connect_error(exc: httpx.HTTPError, where: str, address: object) -> str:
        cause: BaseException | None = exc
        for _ in range(6):  # httpx wraps httpcore wraps ssl; the chain is short
            if cause is None or isinstance(cause, ssl.SSLCertVerificationError):
                break
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return f"TLS certificate of {where} was not accepted: {exc}"
        return f"cannot connect to {where} at {address}: {exc!r}"

    def _judge(self, response: httpx.Response, where: str) -> DeliveryOutcome:
        status = response.status_code
        received = bytearray()
        truncated = False
        # Per-read timeouts alone let a slow drip hold us for ever; bound the whole body read as well.
        deadline = time.monotonic() + self._timeout_s
        for chunk in response.iter_raw():
            received += chunk
            if len(received) > self._max_response_bytes or time.monotonic() > deadline:
                truncated = True
                break
        note = f" (response body cut off after {len(received)} bytes)" if truncated else ""

        if 200 <= status < 300:
            return DeliveryOutcome(ok=True, retry=False, detail=f"HTTP {status} from {where}{note}", status_code=status)
        snippet = _snippet(bytes(received[:1024]))
        text = f"HTTP {status} from {where}" + (f": {snippet}" if snippet else "") + note
        if status == 410:
            return DeliveryOutcome(
                ok=False,
                retry=False,
                disable_target=True,
                status_code=status,
                detail=f"{text}; target disabled",
            )
        if 300 <= status < 400:
            location = response.headers.get("location")
            try:
                shown = _origin(response.url.join(location)) if location else "nowhere"
            except (httpx.InvalidURL, ValueError):
                shown = "an invalid location"
            return DeliveryOutcome(
                ok=False,
                retry=True,
                status_code=status,
                detail=f"HTTP {status} redirect to {shown} not followed; a webhook URL must answer directly",
            )
        return DeliveryOutcome(
            ok=False,
            retry=True,
            status_code=status,
            retry_after_s=parse_retry_after(response.headers.get("retry-after")),
            detail=text,
        )
