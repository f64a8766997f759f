"""Identity and membership: who a connection is, and which sessions it may join.

An `Authenticator` turns an ``auth`` frame into an `Identity`; an `Authorizer`
decides joins. Development mode (the default) trusts the frame's ``userId``
and allows every join. The token verifiers pin their algorithms themselves
(never taken from the token) and fetch signing keys with httpx, cached by the
key server's ``Cache-Control: max-age``; an unknown ``kid`` triggers at most
one refetch per `REFETCH_INTERVAL`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
import jwt
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ..errors import Forbidden, Unauthorized
from ..frames import USER_ID_MAX_LENGTH

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..frames import Auth
    from .config import Settings

__all__ = [
    "FIREBASE_CERTS_URL",
    "AllowAll",
    "Authenticator",
    "Authorizer",
    "DevelopmentAuthenticator",
    "FirebaseVerifier",
    "HmacVerifier",
    "Identity",
    "JwksVerifier",
    "TokenAuthenticator",
    "TokenSessions",
    "Verifier",
    "WebhookAuthorizer",
    "identity_seams",
    "mint_join_token",
]

log = logging.getLogger("signaling.auth")

FIREBASE_CERTS_URL = (
    "https://www.googleapis.com/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com"
)
"""Google's public x509 certificates for Firebase ID tokens (``kid`` → PEM)."""
REFETCH_INTERVAL = 60.0
"""Seconds between two key fetches caused by unknown ``kid``s (no fetch storms)."""
_KID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclasses.dataclass(frozen=True)
class Identity:
    """A verified user: who, until when, and (join tokens) which sessions."""

    user_id: str
    expires_at: float | None = None
    """Unix time the credential expires; None: never (development mode)."""
    sessions: frozenset[str] | Literal["*"] | None = None
    """From a signed join token: the sessions allowed (``"*"``: any); None: no claim."""


class Authenticator(Protocol):
    """Verifies an ``auth`` frame; raises `signaling.errors.Unauthorized`."""

    verifies_tokens: bool
    """False only in development mode."""

    async def authenticate(self, frame: Auth) -> Identity:
        """The verified identity of the connection."""
        ...

    async def verify_bearer(self, token: str) -> Identity:
        """The identity of an ``Authorization: Bearer`` token (HTTP routes)."""
        ...


class Authorizer(Protocol):
    """Decides joins; raises `signaling.errors.Forbidden` to refuse."""

    async def authorize_join(self, identity: Identity, session_id: str) -> None:
        """Return to allow ``identity`` into ``session_id``."""
        ...


class DevelopmentAuthenticator:
    """Takes the ``userId`` of the ``auth`` frame as given (no verification)."""

    verifies_tokens = False

    async def authenticate(self, frame: Auth) -> Identity:
        """The frame's own ``userId``."""
        return Identity(frame.user_id)

    async def verify_bearer(self, token: str) -> Identity:
        """Development mode has no tokens to verify."""
        raise Unauthorized("no token verification is configured")


class Verifier(Protocol):
    """Checks a token's signature and claims; raises `Unauthorized`."""

    async def verify(self, token: str) -> Identity:
        """The identity the token proves."""
        ...


class TokenAuthenticator:
    """``auth`` must carry a token the verifier accepts, naming the same ``userId``."""

    verifies_tokens = True

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    async def authenticate(self, frame: Auth) -> Identity:
        """Verify ``frame.token``; a disagreeing ``userId`` is refused."""
        if not isinstance(frame.token, str) or not frame.token:
            raise Unauthorized("auth needs a token")
        identity = await self.verifier.verify(frame.token)
        if frame.user_id != identity.user_id:
            raise Unauthorized("userId does not match the token")
        return identity

    async def verify_bearer(self, token: str) -> Identity:
        """Verify a bearer token."""
        return await self.verifier.verify(token)

    async def aclose(self) -> None:
        """Close the key fetcher's connections."""
        keys = getattr(self.verifier, "keys", None)
        if keys is not None:
            await keys.aclose()


class _KeySet:
    """Signing keys by ``kid`` from a URL, cached by ``Cache-Control: max-age``."""

    def __init__(
        self,
        url: str,
        parse: Callable[[Any], dict[str, Any]],
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.url = url
        self._parse = parse
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._expires = -float("inf")
        self._last_fetch = -float("inf")
        self._fetching: trio.Event | None = None
        self._client: httpx.AsyncClient | None = None
        self.fetches = 0

    async def key(self, kid: str) -> Any:
        """The key for ``kid``, fetching when stale or (throttled) when unknown."""
        stale = self._clock() >= self._expires
        unknown = kid not in self._keys and self._clock() - self._last_fetch >= REFETCH_INTERVAL
        if stale or unknown:
            await self._fetch()
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized("token signed by an unknown key") from None

    async def _fetch(self) -> None:
        if self._fetching is not None:
            await self._fetching.wait()
            return
        self._fetching = trio.Event()
        try:
            self.fetches += 1
            self._last_fetch = self._clock()
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=5.0)
            try:
                response = await self._client.get(self.url)
                response.raise_for_status()
                self._keys = self._parse(response.json())
            except (httpx.HTTPError, ValueError, TypeError) as exc:
                log.warning("cannot fetch signing keys from %s: %s", self.url, exc)
                self._expires = self._clock() + 10.0
                return
            self._expires = self._clock() + _max_age(response.headers.get("Cache-Control", ""))
        finally:
            self._fetching.set()
            self._fetching = None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _max_age(cache_control: str) -> float:
    match = re.search(r"max-age=(\d+)", cache_control)
    return float(match.group(1)) if match else 300.0


def _x509_keys(document: Any) -> dict[str, Any]:
    keys = {}
    for kid, pem in dict(document).items():
        key = x509.load_pem_x509_certificate(str(pem).encode()).public_key()
        if isinstance(key, RSAPublicKey):
            keys[str(kid)] = key
    return keys


def _jwks_keys(document: Any) -> dict[str, Any]:
    keys = {}
    for entry in document["keys"]:
        if "kid" in entry:
            try:
                keys[str(entry["kid"])] = jwt.PyJWK(entry).key
            except jwt.PyJWKError:
                continue
    return keys


def _kid(token: str, algorithms: list[str]) -> str:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthorized("not a JSON Web Token") from None
    if header.get("alg") not in algorithms:
        raise Unauthorized(f"token algorithm must be {' or '.join(algorithms)}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not _KID.match(kid):
        raise Unauthorized("token has no usable key id")
    return kid


def _user(claims: dict[str, Any], claim: str) -> str:
    user = claims.get(claim)
    if not isinstance(user, str) or not 0 < len(user) <= USER_ID_MAX_LENGTH:
        raise Unauthorized(f"token claim {claim!r} must be 1 to {USER_ID_MAX_LENGTH} characters")
    return user


def _decode(token: str, key: Any, algorithms: list[str], leeway: float, **checks: Any) -> Any:
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            leeway=leeway,
            options={"require": ["exp", "iat"]},
            **checks,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("token expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthorized("token issued in the future") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized("token audience is wrong") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized("token issuer is wrong") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"token refused: {type(exc).__name__}") from None
    if claims["iat"] > time.time() + leeway:
        raise Unauthorized("token issued in the future")
    return claims


class FirebaseVerifier:
    """Firebase ID tokens: RS256 with Google's rotating keys (x509 certificates)."""

    def __init__(
        self, project_id: str, certs_url: str = FIREBASE_CERTS_URL, leeway: float = 10.0
    ) -> None:
        self.project_id = project_id
        self.leeway = leeway
        self.keys = _KeySet(certs_url, _x509_keys)

    async def verify(self, token: str) -> Identity:
        """Check signature, ``iss``, ``aud``, ``exp``, ``iat``, ``auth_time`` and ``sub``."""
        key = await self.keys.key(_kid(token, ["RS256"]))
        claims = _decode(
            token,
            key,
            ["RS256"],
            self.leeway,
            audience=self.project_id,
            issuer=f"https://securetoken.google.com/{self.project_id}",
        )
        auth_time = claims.get("auth_time")
        if not isinstance(auth_time, int | float) or auth_time > time.time() + self.leeway:
            raise Unauthorized("token auth_time must be in the past")
        return Identity(_user(claims, "sub"), expires_at=float(claims["exp"]))


class JwksVerifier:
    """Any OIDC issuer: keys from its JWKS URL (Auth0, Keycloak, Supabase, Clerk…)."""

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...],
        user_claim: str = "sub",
        leeway: float = 10.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.user_claim = user_claim
        self.leeway = leeway
        self.keys = _KeySet(jwks_url, _jwks_keys)

    async def verify(self, token: str) -> Identity:
        """Check signature (configured algorithms only), ``iss``, ``aud``, times, user."""
        key = await self.keys.key(_kid(token, self.algorithms))
        claims = _decode(
            token, key, self.algorithms, self.leeway, audience=self.audience, issuer=self.issuer
        )
        return Identity(_user(claims, self.user_claim), expires_at=float(claims["exp"]))


class HmacVerifier:
    """Signed join tokens (HS256) minted by the app's backend: ``sub``, ``sessions``, ``exp``."""

    def __init__(self, secret: str, leeway: float = 10.0) -> None:
        self._secret = secret
        self.leeway = leeway

    async def verify(self, token: str) -> Identity:
        """Check the HMAC and the claims; ``sessions`` is a list of ids or ``"*"``."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("not a JSON Web Token") from None
        if header.get("alg") != "HS256":
            raise Unauthorized("token algorithm must be HS256")
        claims = _decode(token, self._secret, ["HS256"], self.leeway)
        sessions = claims.get("sessions")
        allowed: frozenset[str] | Literal["*"]
        if sessions == "*":
            allowed = "*"
        elif isinstance(sessions, list) and all(isinstance(s, str) for s in sessions):
            allowed = frozenset(sessions)
        else:
            raise Unauthorized("token claim 'sessions' must be a list of session ids or '*'")
        return Identity(_user(claims, "sub"), expires_at=float(claims["exp"]), sessions=allowed)


def mint_join_token(secret: str, user_id: str, sessions: list[str] | str, ttl: float) -> str:
    """A signed join token for ``user_id`` (what an app's backend would mint)."""
    now = int(time.time())
    claims = {"sub": user_id, "sessions": sessions, "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, secret, algorithm="HS256")


class AllowAll:
    """Every authenticated user may join every session."""

    async def authorize_join(self, identity: Identity, session_id: str) -> None:
        """Allow."""


class TokenSessions:
    """Joins allowed by the token's ``sessions`` claim, then by ``then`` (if any)."""

    def __init__(self, then: Authorizer | None = None) -> None:
        self.then = then

    async def authorize_join(self, identity: Identity, session_id: str) -> None:
        """Refuse sessions outside the claim; identities without one pass on."""
        sessions = identity.sessions
        if sessions is not None and sessions != "*" and session_id not in sessions:
            raise Forbidden(f"your token does not allow session {session_id!r}")
        if self.then is not None:
            await self.then.authorize_join(identity, session_id)

    async def aclose(self) -> None:
        """Close the webhook's connections."""
        close = getattr(self.then, "aclose", None)
        if close is not None:
            await close()


class WebhookAuthorizer:
    """Asks the app's backend: ``POST {userId, sessionId}`` → 200 allow, 403 deny.

    A timeout, an error or any other status denies, with a message that says
    the check failed. Decisions are cached for ``cache_seconds``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        cache_seconds: float,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[bool, float]] = {}
        self._client: httpx.AsyncClient | None = None
        self.calls = 0

    async def authorize_join(self, identity: Identity, session_id: str) -> None:
        """Allow, or raise `Forbidden`."""
        key = (identity.user_id, session_id)
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and cached[1] > now:
            allowed = cached[0]
        else:
            answer = await self._ask(identity.user_id, session_id)
            if answer is None:
                raise Forbidden("could not check membership of this session; try again")
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (answer, now + self.cache_seconds)
            allowed = answer
        if not allowed:
            raise Forbidden(f"not a member of session {session_id!r}")

    async def _ask(self, user_id: str, session_id: str) -> bool | None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        self.calls += 1
        try:
            response = await self._client.post(
                self.url, json={"userId": user_id, "sessionId": session_id}
            )
        except httpx.HTTPError as exc:
            log.warning("membership webhook failed: %s", type(exc).__name__)
            return None
        if response.status_code == 200:
            return True
        if response.status_code == 403:
            return False
        log.warning("membership webhook answered HTTP %d", response.status_code)
        return None

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            await self._client.aclose()


def identity_seams(settings: Settings) -> tuple[Authenticator, Authorizer]:
    """The authenticator and authorizer the settings select."""
    verifier: Verifier | None = None
    if settings.firebase_project_id:
        verifier = FirebaseVerifier(
            settings.firebase_project_id, settings.firebase_certs_url, settings.token_leeway
        )
    elif settings.jwt_jwks_url:
        verifier = JwksVerifier(
            settings.jwt_jwks_url,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithms=settings.jwt_algorithms,
            user_claim=settings.jwt_user_claim,
            leeway=settings.token_leeway,
        )
    elif settings.token_secret:
        verifier = HmacVerifier(settings.token_secret, settings.token_leeway)
    authenticator: Authenticator = (
        DevelopmentAuthenticator() if verifier is None else TokenAuthenticator(verifier)
    )
    webhook: Authorizer | None = None
    if settings.membership_webhook_url:
        webhook = WebhookAuthorizer(
            settings.membership_webhook_url,
            timeout=settings.membership_webhook_timeout,
            cache_seconds=settings.membership_cache_seconds,
        )
    authorizer: Authorizer = TokenSessions(webhook)
    return authenticator, authorizer
