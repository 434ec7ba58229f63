"""The printable form of an engine address: its password (and any secret in its query)
hidden, so a banner, a log line or an error message never carries one."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
# Query parameters that carry a secret (redis-py reads `password` from the query too).
_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "secret", "token", "api_key", "apikey"})


def redacted_url(url: str | None) -> str:
    """url with the password of its user info and secret query values replaced by ***.

    Addresses without user info (a Kafka bootstrap list, `host:port`) come back as they
    are. `redis_url` stays a plain string in the settings, not a `SecretStr`: it is read
    in some twenty places that need the real value and printed in three; hiding it where
    it is printed (here, tested in tests/recsys/test_redaction.py) is the smaller change.
    """
    if not url:
        return str(url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL we can take apart: print nothing of it but its kind
        return f"<unparsable address, {len(url)} characters>"
    netloc = parts.netloc
    if password is not None:
        user_info, _, host = netloc.rpartition("@")
        user = user_info.split(":", 1)[0]
        netloc = f"{user}:{HIDDEN}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
            hidden = [(k, HIDDEN if k.lower() in _SECRET_PARAMS else v) for k, v in pairs]
            query = urlencode(hidden, safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
