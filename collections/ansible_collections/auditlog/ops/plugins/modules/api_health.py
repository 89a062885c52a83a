#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: api_health
short_description: The audit API's health, components and statistics, timed, direct and through nginx
version_added: 0.3.0
description:
  - Asks each of O(endpoints) (an API host directly, e.g. V(http://127.0.0.1:8000), and the
    service through nginx, e.g. V(https://lb.example.org)) for C(GET /health) (liveness),
    C(GET /api/v1/metrics/health) (the state of PostgreSQL, Redis, NATS and the worker as the API
    sees them) and C(GET /api/v1/metrics/stats) (pool, cache and queue figures), as
    C(curl -w) would, with the time split into DNS, connect, TLS, first byte and total.
  - With O(api_key) (the admin API key), C(/api/v1/metrics/health) also says why a component is
    down (the C(error) of each component; anonymous callers see only the states).
  - nginx serves C(/api/v1/metrics) and C(/api/v1/metrics/stats) only to C(nginx_internal_allow);
    a 403 there is reported as info, not as a fault.
  - "Findings: an endpoint that cannot be reached is critical; a C(/api/v1/metrics/health) that
    says V(degraded) or V(unhealthy), or a component that is not healthy, is critical, naming the
    component; a request slower than O(slow_ms) is a warning."
  - A probe, it changes nothing, and an endpoint that does not answer is data (C(available=false)
    and the error), not a failure.
author: audit-log project (!UNKNOWN)
options:
  endpoints:
    description:
      - The places to ask.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A name for the endpoint in the results (V(direct), V(nginx), the host...).
        type: str
        required: true
      url:
        description: The base URL (scheme, host, port, optional path prefix).
        type: str
        required: true
      component:
        description:
          - The component an unreachable endpoint is reported against; V(api) for an API host,
            V(nginx) for the load balancer. Unset, V(nginx) for HTTPS and V(api) otherwise.
        type: str
      paths:
        description: The paths to ask (default O(paths)).
        type: list
        elements: str
      server_name:
        description:
          - The name to send as C(Host) and to check the certificate against, when the URL's host
            is an address (e.g. V(https://10.0.0.5) with the certificate of V(lb.example.org)).
        type: str
  paths:
    description:
      - The paths asked on every endpoint that names none.
    type: list
    elements: str
    default: [/health, /api/v1/metrics/health, /api/v1/metrics/stats]
  api_key:
    description:
      - The admin API key (C(ADMIN_API_KEY), C(audit_admin_api_key)), sent as C(X-API-Key) to
        C(/api/v1/metrics/*). Never logged.
    type: str
  ca_file:
    description:
      - The CA certificate (PEM) to check HTTPS endpoints' certificates against (the system's CAs
        when unset).
    type: path
  validate_certs:
    description:
      - Check HTTPS certificates. Turn off only to look at a host whose certificate is known bad.
    type: bool
    default: true
  timeout:
    description:
      - Seconds for each connection and each reply.
    type: float
    default: 5
  slow_ms:
    description:
      - A request whose total time reaches this many milliseconds is reported as slow (warning).
    type: float
    default: 1000
attributes:
  check_mode:
    description: >-
      Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: >-
      Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Standard library only (C(socket), C(ssl), C(http.client)), so the target needs no C(requests).
seealso:
  - module: auditlog.ops.component
"""

EXAMPLES = r"""
- name: The API, on its host and through nginx
  auditlog.ops.api_health:
    endpoints:
      - {name: direct, url: "http://127.0.0.1:8000"}
      - {name: nginx, url: "https://lb.example.org", paths: [/health, /api/v1/metrics/health]}
    ca_file: /etc/audit-log/ca.crt
    api_key: "{{ audit_admin_api_key }}"
  register: api
"""

RETURN = r"""
endpoints:
  description:
    - Per endpoint name, C(url), C(component), C(available) (did every request get an answer),
      C(error), and C(checks), per path C(status_code), C(timing) (C(dns_ms), C(connect_ms),
      C(tls_ms), C(ttfb_ms), C(total_ms)), C(body) (the parsed JSON, or the text, cut at 2000
      characters), C(error).
  returned: always
  type: dict
  sample:
    direct:
      url: http://127.0.0.1:8000
      available: true
      checks:
        /health:
          status_code: 200
          body: {"status": "ok"}
          timing: {"dns_ms": 0.1, "connect_ms": 0.2, "tls_ms": null, "ttfb_ms": 2.1, "total_ms": 2.3}
status:
  description:
    - The worst C(status) any endpoint's C(/api/v1/metrics/health) gave (V(healthy), V(degraded),
      V(unhealthy)), or null when none answered.
  returned: always
  type: str
findings:
  description: What is wrong (module_utils/findings.py).
  returned: always
  type: list
  elements: dict
"""

import contextlib  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import time  # noqa: E402
from http.client import HTTPConnection, HTTPException  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import tls  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402

HEALTH = "/api/v1/metrics/health"
DEFAULT_PATHS = ["/health", HEALTH, "/api/v1/metrics/stats"]
# /api/v1/metrics/health's components -> the stack's component names
COMPONENT_NAMES = {"database": "postgresql", "redis": "redis", "nats": "nats", "worker": "worker"}
STATUS_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}
BODY_LIMIT = 2000


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000.0, 2)


def timed_get(url, path, headers=None, timeout=5.0, ssl_context=None, server_name=None):
    """One GET, timed: {status_code, headers, body (bytes), timing, error}. Never raises for
    network trouble: the error is in the result, the timing as far as it got."""
    parts = urlsplit(url)
    host = parts.hostname
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme == "https" else 80)
    target = (parts.path.rstrip("/") + path) or "/"
    timing = {"dns_ms": None, "connect_ms": None, "tls_ms": None, "ttfb_ms": None, "total_ms": None}
    result = {"status_code": None, "headers": {}, "body": None, "timing": timing, "error": None}
    start = time.perf_counter()
    sock = None
    try:
        if scheme not in ("http", "https") or not host:
            raise ValueError(f"not an http(s) URL: {url}")
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        t_dns = time.perf_counter()
        timing["dns_ms"] = _ms(t_dns - start)
        last_error = None
        for family, socktype, proto, _canon, addr in infos:
            try:
                sock = socket.socket(family, socktype, proto)
                sock.settimeout(timeout)
                sock.connect(addr)
                break
            except OSError as exc:
                last_error = exc
                sock.close()
                sock = None
        if sock is None:
            raise last_error or OSError(f"no address for {host}")
        t_conn = time.perf_counter()
        timing["connect_ms"] = _ms(t_conn - t_dns)
        if scheme == "https":
            ctx = ssl_context or ssl.create_default_context()
            sock = ctx.wrap_socket(sock, server_hostname=server_name or host)
            t_tls = time.perf_counter()
            timing["tls_ms"] = _ms(t_tls - t_conn)
        conn = HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        req_headers = {
            "Host": server_name or parts.netloc,
            "Accept": "application/json",
            "Connection": "close",
            "User-Agent": "auditlog.ops.api_health",
        }
        req_headers.update(headers or {})
        conn.request("GET", target, headers=req_headers)
        # the first byte of the answer: the socket turns readable
        readable, _w, _x = select.select([sock], [], [], timeout)
        if not readable and not (hasattr(sock, "pending") and sock.pending()):
            raise TimeoutError(f"no answer within {timeout}s")
        timing["ttfb_ms"] = _ms(time.perf_counter() - start)
        response = conn.getresponse()
        result["status_code"] = response.status
        result["headers"] = {k.lower(): v for k, v in response.getheaders()}
        result["body"] = response.read()
    except (OSError, HTTPException, ValueError, ssl.SSLError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        timing["total_ms"] = _ms(time.perf_counter() - start)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
    return result


def parse_body(raw, content_type=""):
    """JSON when it is JSON, else the text (cut)."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text[:BODY_LIMIT]


def endpoint_component(endpoint):
    if endpoint.get("component"):
        return endpoint["component"]
    return "nginx" if urlsplit(endpoint["url"]).scheme == "https" else "api"


def endpoint_findings(name, entry, slow_ms):
    """The findings about one endpoint's checks."""
    out = []
    component = entry["component"]
    failed = {path: check for path, check in entry["checks"].items() if check.get("error")}
    if failed:
        first = next(iter(failed.values()))
        out.append(
            finding(
                "critical",
                component,
                "reachable",
                "{} ({}) cannot be reached: {}".format(name, entry["url"], first["error"]),
                evidence={
                    "url": entry["url"],
                    "failed": {
                        path: {"error": c["error"], "timing": c["timing"]} for path, c in failed.items()
                    },
                },
            )
        )
    for path, check in entry["checks"].items():
        where = "{} {}{}".format(name, entry["url"].rstrip("/"), path)
        if check.get("error"):
            continue
        code = check.get("status_code")
        body = check.get("body")
        if path == HEALTH and isinstance(body, dict) and "status" in body:
            status = body.get("status")
            down = []
            for cname, c in sorted((body.get("components") or {}).items()):
                if isinstance(c, dict) and c.get("status") != "healthy":
                    text = "{} {}".format(cname, c.get("status"))
                    if c.get("error"):
                        text += " ({})".format(c["error"])
                    down.append((COMPONENT_NAMES.get(cname, cname), text))
            for cname, text in down:
                out.append(
                    finding(
                        "critical",
                        cname,
                        "api_health",
                        f"{where}: the API is {status}: {text}",
                        evidence={"status_code": code, "body": body},
                    )
                )
            if status != "healthy" and not down:
                out.append(
                    finding(
                        "critical",
                        "api",
                        "api_health",
                        f"{where}: the API is {status}",
                        evidence={"status_code": code, "body": body},
                    )
                )
        elif code is not None and code >= 400:
            if path.startswith("/api/v1/metrics") and code in (401, 403):
                out.append(
                    finding(
                        "info",
                        component,
                        "http_status",
                        f"{where} answered {code} (nginx serves it to nginx_internal_allow only)",
                        evidence={"status_code": code},
                        variable="nginx_internal_allow",
                    )
                )
            else:
                out.append(
                    finding(
                        "critical" if path in ("/health", HEALTH) else "warning",
                        component,
                        "http_status",
                        f"{where} answered {code}",
                        evidence={"status_code": code, "body": body},
                    )
                )
        total = (check.get("timing") or {}).get("total_ms")
        if slow_ms and total is not None and total >= slow_ms:
            out.append(
                finding(
                    "warning",
                    component,
                    "latency",
                    f"{where} took {total:.0f} ms (slow from {slow_ms:.0f} ms)",
                    evidence={"timing": check["timing"], "status_code": code},
                )
            )
    return out


def worst_status(endpoints):
    worst = None
    for entry in endpoints.values():
        body = (entry["checks"].get(HEALTH) or {}).get("body")
        status = body.get("status") if isinstance(body, dict) else None
        if status in STATUS_RANK and (worst is None or STATUS_RANK[status] > STATUS_RANK[worst]):
            worst = status
    return worst


def probe(endpoints, paths, api_key=None, timeout=5.0, ssl_context=None, getter=timed_get):
    """Ask every endpoint its paths; {name: entry} as the module returns it."""
    out = {}
    for ep in endpoints:
        entry = {
            "url": ep["url"],
            "component": endpoint_component(ep),
            "checks": {},
            "available": True,
            "error": None,
        }
        for path in ep.get("paths") or paths:
            headers = {"X-API-Key": api_key} if api_key and path.startswith("/api/") else None
            r = getter(
                ep["url"],
                path,
                headers=headers,
                timeout=timeout,
                ssl_context=ssl_context,
                server_name=ep.get("server_name"),
            )
            check = {
                "status_code": r["status_code"],
                "timing": r["timing"],
                "error": r["error"],
                "body": parse_body(r["body"], r["headers"].get("content-type", "")),
            }
            if r["error"]:
                entry["available"] = False
                entry["error"] = entry["error"] or r["error"]
            entry["checks"][path] = check
        out[ep["name"]] = entry
    return out


def argument_spec():
    return {
        "endpoints": {
            "type": "list",
            "elements": "dict",
            "required": True,
            "options": {
                "name": {"type": "str", "required": True},
                "url": {"type": "str", "required": True},
                "component": {"type": "str"},
                "paths": {"type": "list", "elements": "str"},
                "server_name": {"type": "str"},
            },
        },
        "paths": {"type": "list", "elements": "str", "default": DEFAULT_PATHS},
        "api_key": {"type": "str", "no_log": True},
        "ca_file": {"type": "path"},
        "validate_certs": {"type": "bool", "default": True},
        "timeout": {"type": "float", "default": 5},
        "slow_ms": {"type": "float", "default": 1000},
    }


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    try:
        ctx = tls.client_context(p["ca_file"], verify="full" if p["validate_certs"] else "none")
    except tls.TLSError as exc:
        module.fail_json(msg=str(exc))
    names = [ep["name"] for ep in p["endpoints"]]
    if len(set(names)) != len(names):
        module.fail_json(msg="endpoints: each needs a name of its own, not {}".format(", ".join(names)))
    endpoints = probe(p["endpoints"], p["paths"], p["api_key"], p["timeout"], ctx)
    findings = []
    for name, entry in endpoints.items():
        findings += endpoint_findings(name, entry, p["slow_ms"])
    module.exit_json(changed=False, endpoints=endpoints, status=worst_status(endpoints), findings=findings)


if __name__ == "__main__":
    main()
