"""Who may call what: bearer tokens per role, checked by the ingress middleware before a route runs.

Roles, each including the ones below it: `admin` ⊇ `write` ⊇ `read` (no route needs more than
write today: an admin token is a write token that later admin routes will also accept).
- read: `POST /recommend`, `/rank`, `/search`, `/ads`, and every GET (`/items/{id}`, `/forecast/{id}`, `/campaigns/{id}`);
- write: every other POST/PUT/PATCH/DELETE (`/events`, `/items`: they change what every later
  answer sees). Fail-closed: a method other than GET/HEAD on a path not in the read list needs
  write, so an odd spelling of a write route (`/events%0A`, which the router still matches) is
  never taken for a read;
- open: `/healthz`, `/readyz` (the kubelet's probes carry no token), `/docs`, `/openapi.json`.

Tokens come from environment variables (`serve.auth.token_env`: role → variable name), which the
chart fills from a Kubernetes Secret in the serving cluster's pods only (values name the Secret,
`security.serveAuth.secretName`, never a token). A variable may hold
several comma-separated tokens, so one can be rotated without downtime. Comparison is constant
time (`hmac.compare_digest` against every token of every role, always all of them), and a token is
never logged or echoed. Without a token: 401 with `WWW-Authenticate: Bearer`; with a token that
does not grant the route's role: 403; both in the JSON error shape of every other error.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field

ROLES = ("read", "write", "admin")  # each includes the ones before it
OPEN = frozenset({"/healthz", "/readyz", "/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"})
READ_POSTS = frozenset({"/recommend", "/rank", "/search", "/ads"})  # POSTs that only read (the query is the body)


def required_role(method: str, path: str) -> str | None:
    """The role a request needs (None: open). Fail-closed: anything that is not a GET/HEAD or a
    listed read POST, spelled exactly, needs write."""
    method = method.upper()
    exact = path.rstrip("/") or "/"
    if method in ("GET", "HEAD"):
        return None if exact in OPEN else "read"
    if method == "POST" and exact in READ_POSTS:
        return "read"
    return "write"


@dataclass(frozen=True)
class Authenticator:
    tokens: dict[str, tuple[bytes, ...]] = field(repr=False)  # role → its tokens (never printed)

    @classmethod
    def from_env(cls, token_env: dict[str, str], environ=None) -> Authenticator:
        """Tokens from the variables `token_env` names; ValueError naming the variable when a role
        has none (auth on with no token would lock everyone out, or worse, let anyone in)."""
        environ = os.environ if environ is None else environ
        tokens = {}
        for role in ROLES:
            name = token_env.get(role)
            values = tuple(t.strip().encode() for t in (environ.get(name, "") if name else "").split(",") if t.strip())
            if not values:
                raise ValueError(f"serve.auth is on but the environment variable {name!r} (serve.auth.token_env.{role}) holds "
                                 "no token; set it (the chart fills it from the Secret named by security.serveAuth.secretName), or turn "
                                 "auth off with serve.auth.enabled: false")
            if any(len(t) < 16 for t in values):
                raise ValueError(f"a token in {name!r} (serve.auth.token_env.{role}) is shorter than 16 characters; use a random "
                                 "one, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
            tokens[role] = values
        return cls(tokens)

    def role_of(self, token: bytes) -> str | None:
        """The highest role a token grants; every comparison runs, so timing says nothing."""
        found = None
        for role in ROLES:
            for known in self.tokens[role]:
                if hmac.compare_digest(token, known):
                    found = role
        return found

    def check(self, method: str, path: str, authorization: bytes | None) -> tuple[int, str] | None:
        """None when the request may go on, else (status, message) for the error answer."""
        needed = required_role(method, path)
        if needed is None:
            return None
        scheme, _, token = (authorization or b"").partition(b" ")
        if not authorization or scheme.lower() != b"bearer" or not token.strip():
            return 401, f"{method} {path} needs a {needed} token: send the header 'Authorization: Bearer <token>'"
        role = self.role_of(token.strip())
        if role is None:
            return 401, "the token is not valid (it matches no configured token)"
        if ROLES.index(role) < ROLES.index(needed):
            return 403, f"a {role} token may not call {method} {path}; it needs a {needed} token"
        return None
