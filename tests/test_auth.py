"""Token verification with real cryptography against local key and webhook servers."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import trio
import trio_websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from quart import request
from quart_trio import QuartTrio

from signaling.client import connect
from signaling.errors import Forbidden, NotInSession, Unauthorized
from signaling.frames import Auth, Error, Offer, SessionLeft, UserJoined, UserLeft, Welcome
from signaling.server import Settings

from .conftest import TEST_SETTINGS, Server, serve_app, start_server
from .test_cli import run_cli

PROJECT = "demo-project"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
SECRET = "a-join-token-secret-of-at-least-32-chars"


def _certificate(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "securetoken.system.gserviceaccount.com")]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(
        jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key())
    )
    return jwk | {"kid": kid, "alg": alg, "use": "sig"}


@dataclass
class Keys:
    """The local key server and membership webhook."""

    url: str = ""
    fetches: dict[str, int] = field(default_factory=lambda: {"certs": 0, "jwks": 0})
    members: set[tuple[str, str]] = field(default_factory=set)
    webhook_calls: list[dict[str, Any]] = field(default_factory=list)
    webhook_mode: str = "ok"


@pytest.fixture
async def keys(nursery: trio.Nursery) -> AsyncIterator[Keys]:
    state = Keys()
    app = QuartTrio("keys")

    @app.get("/certs")
    async def certs() -> Any:
        state.fetches["certs"] += 1
        return {"k1": _certificate(RSA_KEY)}, 200, {"Cache-Control": "public, max-age=3600"}

    @app.get("/jwks")
    async def jwks() -> Any:
        state.fetches["jwks"] += 1
        body = {
            "keys": [
                _jwk(RSA_KEY, "r1", "RS256"),
                _jwk(EC_KEY, "e1", "ES256"),
                _jwk(ED_KEY, "d1", "EdDSA"),
            ]
        }
        return body, 200, {"Cache-Control": "max-age=600"}

    @app.post("/member")
    async def member() -> Any:
        body = await request.get_json()
        state.webhook_calls.append(body)
        if state.webhook_mode == "slow":
            await trio.sleep(5)
        if state.webhook_mode == "error":
            return {"error": "boom"}, 500
        allowed = (body["userId"], body["sessionId"]) in state.members
        return ({"allowed": True}, 200) if allowed else ({"allowed": False}, 403)

    state.url, stop = await serve_app(nursery, app)
    yield state
    stop.set()


def firebase_token(
    sub: str = "alice",
    *,
    key: Any = RSA_KEY,
    kid: str | None = "k1",
    alg: str = "RS256",
    **claims: Any,
) -> str:
    now = int(time.time())
    payload = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": sub,
        "iat": now - 10,
        "auth_time": now - 60,
        "exp": now + 3600,
    } | claims
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


@pytest.fixture
def settings(keys: Keys) -> Settings:
    return TEST_SETTINGS.replace(
        firebase_project_id=PROJECT, firebase_certs_url=f"{keys.url}/certs"
    )


async def test_firebase_token_identifies_the_user(server: Server, keys: Keys) -> None:
    async with connect(server.url, user_id="alice", token=firebase_token()) as alice:
        assert alice.user_id == "alice"
        await alice.join("s")
    async with connect(server.url, user_id="bob", token=firebase_token("bob")) as bob:
        assert (await bob.join("s")).participants == []
    assert keys.fetches["certs"] == 1  # cached by Cache-Control: max-age


def _none_token() -> str:
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": "k1"}).encode())
    now = int(time.time())
    body = jwt.utils.base64url_encode(
        json.dumps(
            {
                "iss": f"https://securetoken.google.com/{PROJECT}",
                "aud": PROJECT,
                "sub": "alice",
                "iat": now,
                "auth_time": now,
                "exp": now + 60,
            }
        ).encode()
    )
    return f"{header.decode()}.{body.decode()}."


def _key_confusion_token() -> str:
    # HS256 "signed" with the RSA public key, the classic algorithm confusion
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    payload = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": "alice",
        "iat": now,
        "auth_time": now,
        "exp": now + 60,
    }
    header = jwt.utils.base64url_encode(
        json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode()
    )
    body = jwt.utils.base64url_encode(json.dumps(payload).encode())
    import hashlib
    import hmac

    signing_input = header + b"." + body
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


def _custom_token() -> str:
    # what the Admin SDK's createCustomToken makes: not an ID token
    now = int(time.time())
    payload = {
        "iss": "firebase-adminsdk-x@demo-project.iam.gserviceaccount.com",
        "sub": "firebase-adminsdk-x@demo-project.iam.gserviceaccount.com",
        "aud": "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit",
        "uid": "alice",
        "iat": now,
        "exp": now + 3600,
    }
    return jwt.encode(payload, OTHER_RSA_KEY, algorithm="RS256", headers={"kid": "sa-key"})


REFUSED: dict[str, Callable[[], str]] = {
    "alg none": lambda: _none_token(),
    "HS256 with the RSA public key": _key_confusion_token,
    "unknown kid": lambda: firebase_token(key=OTHER_RSA_KEY, kid="k9"),
    "kid with path characters": lambda: firebase_token(kid="../../etc/passwd"),
    "no kid": lambda: firebase_token(kid=None),
    "wrong issuer": lambda: firebase_token(iss="https://securetoken.google.com/other"),
    "wrong audience": lambda: firebase_token(aud="other-project"),
    "expired": lambda: firebase_token(exp=int(time.time()) - 60),
    "issued in the future": lambda: firebase_token(iat=int(time.time()) + 600),
    "auth_time in the future": lambda: firebase_token(auth_time=int(time.time()) + 600),
    "empty sub": lambda: firebase_token(""),
    "overlong sub": lambda: firebase_token("x" * 129),
    "signed by another key": lambda: firebase_token(key=OTHER_RSA_KEY),
    "Firebase custom token": _custom_token,
    "not a JWT": lambda: "not.a.token",
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_refused_tokens_get_unauthorized_and_4401(
    server: Server, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    token = REFUSED[case]()
    user = "" if case in {"empty sub", "overlong sub"} else "alice"
    with caplog.at_level(logging.DEBUG):
        async with trio_websocket.open_websocket_url(server.url) as ws:
            await ws.send_message(
                json.dumps({"type": "auth", "userId": user or "alice", "token": token, "id": "a"})
            )
            error = json.loads(await ws.get_message())
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
    assert (error["type"], error["code"], error["replyTo"]) == ("error", "unauthorized", "a")
    assert closed.value.reason is not None
    assert closed.value.reason.code == 4401
    assert not any(token in record.getMessage() for record in caplog.records)
    assert token not in caplog.text


async def test_user_id_disagreeing_with_the_token_is_refused(server: Server) -> None:
    with pytest.raises(Unauthorized, match="does not match"):
        async with connect(server.url, user_id="mallory", token=firebase_token("alice")):
            pass


async def test_missing_token_is_refused(server: Server) -> None:
    with pytest.raises(Unauthorized, match="needs a token"):
        async with connect(server.url, user_id="alice"):
            pass


async def test_unknown_kids_cause_no_fetch_storm(server: Server, keys: Keys) -> None:
    async with connect(server.url, user_id="alice", token=firebase_token()):
        pass
    for kid in ("k7", "k8", "k9"):
        token = firebase_token(key=OTHER_RSA_KEY, kid=kid)
        with pytest.raises(Unauthorized, match="unknown key"):
            async with connect(server.url, user_id="alice", token=token):
                pass
    assert keys.fetches["certs"] == 1  # within the refetch interval: no new fetch


async def test_an_unknown_kid_refetches_once_per_interval(keys: Keys) -> None:
    from signaling.server.auth import REFETCH_INTERVAL, FirebaseVerifier

    now = [0.0]
    verifier = FirebaseVerifier(PROJECT, f"{keys.url}/certs")
    verifier.keys._clock = lambda: now[0]
    await verifier.verify(firebase_token())
    unknown = firebase_token(key=OTHER_RSA_KEY, kid="rotated")
    for at, fetches in [(10.0, 1), (REFETCH_INTERVAL + 1, 2), (REFETCH_INTERVAL + 20, 2)]:
        now[0] = at
        with pytest.raises(Unauthorized, match="unknown key"):
            await verifier.verify(unknown)
        assert keys.fetches["certs"] == fetches
    await verifier.keys.aclose()


async def test_turn_credentials_need_a_bearer_token(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.http) as http:
        missing = await http.post("/turn/credentials")
        assert missing.status_code == 401
        assert missing.json()["error"] == "unauthorized"
        bad = await http.post("/turn/credentials", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        good = await http.post(
            "/turn/credentials", headers={"Authorization": f"Bearer {firebase_token()}"}
        )
        assert good.status_code == 200
        assert good.json()["iceServers"]


@pytest.mark.parametrize(
    "settings",
    [TEST_SETTINGS.replace(ping_interval=0.2, ping_timeout=0.2)],
    ids=["fast-ticks"],
)
async def test_expired_token_closes_4401_unless_refreshed(server: Server, keys: Keys) -> None:
    # this test's settings have no verifier; give the hub one pointing at the key server
    from signaling.server.auth import FirebaseVerifier, TokenAuthenticator

    server.hub.authenticator = TokenAuthenticator(
        FirebaseVerifier(PROJECT, f"{keys.url}/certs", leeway=0)
    )
    soon = int(time.time()) + 2
    async with connect(server.url, user_id="alice", token=firebase_token(exp=soon)) as alice:
        async with connect(server.url, user_id="bob", token=firebase_token("bob", exp=soon)) as bob:
            # alice refreshes before exp: a fresh welcome, same connection
            await alice.send(_auth("alice", firebase_token(exp=soon + 3600)))
            with trio.fail_after(5):
                welcome = await alice.receive()
            assert welcome.connection_id == alice.connection_id  # type: ignore[union-attr]
            # a refresh for another user is refused and changes nothing
            await alice.send(_auth("bob", firebase_token("bob", exp=soon + 3600)))
            with trio.fail_after(5):
                refused = await alice.receive()
            assert refused.code == "unauthorized"  # type: ignore[union-attr]
            with trio.fail_after(10):
                frames = [frame async for frame in bob]
            assert bob.closed is not None
            assert bob.closed.code == 4401
            assert [f.code for f in frames] == ["unauthorized"]  # type: ignore[union-attr]
        await alice.join("still-here")


def _auth(user: str, token: str) -> Any:
    from signaling.frames import Auth

    return Auth(user_id=user, token=token)


# --- any OIDC issuer through JWKS ------------------------------------------------


def oidc_token(key: Any, kid: str, alg: str, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://issuer.test/",
        "aud": "signaling",
        "uid": "carol",
        "sub": "auth0|1",
        "iat": now,
        "exp": now + 600,
    } | claims
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


@pytest.mark.parametrize(
    ("key", "kid", "alg"),
    [(RSA_KEY, "r1", "RS256"), (EC_KEY, "e1", "ES256"), (ED_KEY, "d1", "EdDSA")],
)
async def test_jwks_issuer_with_each_algorithm(
    keys: Keys, nursery: trio.Nursery, key: Any, kid: str, alg: str
) -> None:
    from signaling.server.auth import JwksVerifier

    verifier = JwksVerifier(
        f"{keys.url}/jwks",
        issuer="https://issuer.test/",
        audience="signaling",
        algorithms=("RS256", "ES256", "EdDSA"),
        user_claim="uid",
    )
    identity = await verifier.verify(oidc_token(key, kid, alg))
    assert identity.user_id == "carol"
    only_rsa = JwksVerifier(
        f"{keys.url}/jwks",
        issuer="https://issuer.test/",
        audience="signaling",
        algorithms=("RS256",),
    )
    if alg != "RS256":
        with pytest.raises(Unauthorized, match="algorithm must be RS256"):
            await only_rsa.verify(oidc_token(key, kid, alg))
    with pytest.raises(Unauthorized, match="audience"):
        await verifier.verify(oidc_token(key, kid, alg, aud="someone-else"))
    with pytest.raises(Unauthorized, match="issuer"):
        await verifier.verify(oidc_token(key, kid, alg, iss="https://evil.test/"))


def test_jwks_settings_need_issuer_and_audience() -> None:
    result = run_cli("serve", "--jwt-jwks-url", "http://127.0.0.1:9/jwks")
    assert result.returncode == 2
    assert "JWT_JWKS_URL needs JWT_ISSUER and JWT_AUDIENCE" in result.stderr


def test_one_verifier_at_a_time() -> None:
    result = run_cli("serve", "--firebase-project-id", "p", "--token-secret", SECRET)
    assert result.returncode == 2
    assert "choose one token verifier" in result.stderr


# --- signed join tokens and session membership -----------------------------------


def cli_token(user: str, *sessions: str, ttl: str = "10m") -> str:
    args = ["token", "--user", user, "--ttl", ttl, "--secret", SECRET]
    for session in sessions:
        args += ["--session", session]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(token_secret=SECRET)], ids=["join-tokens"]
)
async def test_join_tokens_limit_sessions_and_reveal_nothing(server: Server) -> None:
    async with (
        connect(server.url, user_id="alice", token=cli_token("alice", "room-1")) as alice,
        connect(server.url, user_id="bob", token=cli_token("bob", "*")) as bob,
    ):
        await bob.join("secret-room")
        await bob.join("room-1")
        await alice.join("room-1")
        with pytest.raises(Forbidden) as denied:
            await alice.join("secret-room")
        assert "bob" not in denied.value.message
        with trio.fail_after(5):
            # bob hears alice in room-1 only
            assert await bob.receive() == UserJoined(session_id="room-1", user_id="alice")
            await bob.join("room-1")
        assert server.hub.registry.participants("secret-room") == ["bob"]


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(token_secret=SECRET)], ids=["join-tokens"]
)
async def test_a_reauth_gives_up_the_seats_its_token_does_not_allow(server: Server) -> None:
    async with (
        connect(server.url, user_id="alice", token=cli_token("alice", "a", "b")) as alice,
        connect(server.url, user_id="bob", token=cli_token("bob", "*")) as bob,
    ):
        await alice.join("a")
        await alice.join("b")
        await bob.join("a")
        with trio.fail_after(5):
            assert await alice.receive() == UserJoined(session_id="a", user_id="bob")
        # a fresh token for room b only: the seat in a goes, and bob hears it
        await alice.send(Auth(user_id="alice", token=cli_token("alice", "b"), id="again"))
        with trio.fail_after(5):
            frames = [await alice.receive() for _ in range(3)]
            assert await bob.receive() == UserLeft(session_id="a", user_id="alice")
        [left] = [f for f in frames if isinstance(f, SessionLeft)]
        [refused] = [f for f in frames if isinstance(f, Error)]
        assert left.session_id == "a"
        assert (refused.code, refused.session_id, refused.reply_to) == ("forbidden", "a", "again")
        assert any(isinstance(f, Welcome) for f in frames)
        assert server.hub.registry.participants("a") == ["bob"]
        assert server.hub.registry.participants("b") == ["alice"]
        # and it cannot relay into a any more
        with pytest.raises(NotInSession):
            await alice.request(
                Offer(to="bob", session_id="a", data={"sdp": {"type": "offer", "sdp": "v=0"}})
            )


@pytest.mark.parametrize(
    "settings", [TEST_SETTINGS.replace(token_secret=SECRET)], ids=["join-tokens"]
)
async def test_join_token_signed_with_another_secret_is_refused(server: Server) -> None:
    forged = jwt.encode(
        {"sub": "alice", "sessions": "*", "iat": int(time.time()), "exp": int(time.time()) + 60},
        "another-secret-that-is-also-32-chars-long",
        algorithm="HS256",
    )
    with pytest.raises(Unauthorized):
        async with connect(server.url, user_id="alice", token=forged):
            pass


def test_token_command_needs_a_secret() -> None:
    result = run_cli("token", "--user", "alice", "--session", "s")
    assert result.returncode == 2
    assert "SIGNALING_TOKEN_SECRET" in result.stderr


@pytest.fixture
def webhook_settings(keys: Keys) -> Settings:
    return TEST_SETTINGS.replace(
        membership_webhook_url=f"{keys.url}/member",
        membership_webhook_timeout=0.5,
        membership_cache_seconds=30,
    )


async def test_membership_webhook_allows_denies_and_caches(
    keys: Keys, webhook_settings: Settings, nursery: trio.Nursery
) -> None:
    running = await start_server(nursery, webhook_settings)
    url = running.url
    keys.members = {("alice", "s"), ("bob", "s")}
    async with connect(url, user_id="alice") as alice, connect(url, user_id="mallory") as mallory:
        await alice.join("s")
        with pytest.raises(Forbidden, match="not a member"):
            await mallory.join("s")
        await alice.leave("s")
        await alice.join("s")  # cached: no second call
        assert keys.webhook_calls == [
            {"userId": "alice", "sessionId": "s"},
            {"userId": "mallory", "sessionId": "s"},
        ]
        keys.webhook_mode = "slow"
        with pytest.raises(Forbidden, match="could not check membership"):
            await alice.join("other")
        keys.webhook_mode = "error"
        with pytest.raises(Forbidden, match="could not check membership"):
            await alice.join("third")
    running.stop.set()


async def test_a_denied_join_sends_no_user_joined(
    keys: Keys, webhook_settings: Settings, nursery: trio.Nursery
) -> None:
    running = await start_server(nursery, webhook_settings)
    url = running.url
    keys.members = {("alice", "s"), ("bob", "s")}
    async with connect(url, user_id="alice") as alice:
        await alice.join("s")
        async with connect(url, user_id="mallory") as mallory:
            with pytest.raises(Forbidden):
                await mallory.join("s")
        async with connect(url, user_id="bob") as bob:
            await bob.join("s")
        with trio.fail_after(5):
            # the first thing alice hears about is bob: nothing about mallory
            assert await alice.receive() == UserJoined(session_id="s", user_id="bob")
    running.stop.set()
