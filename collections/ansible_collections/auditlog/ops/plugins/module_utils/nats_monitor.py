# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""NATS's monitoring port for modules: the HTTP endpoints (varz, connz, routez, jsz) and their
summaries, and the JetStream API's stream and consumer state in the same shape.

The summaries are pure functions over the endpoints' JSON, shared by the modules and their unit
tests. See https://docs.nats.io/running-a-nats-service/nats_admin/monitoring.
"""

import json
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.auditlog.ops.plugins.module_utils import tls

NANOSECONDS = 1000000000
# connz's `reason` of a connection closed for its credentials (kept in the closed-connections ring).
AUTH_FAILURE_REASONS = ("Authentication Failure", "Authentication Timeout", "Authorization Violation")


class MonitorError(Exception):
    """The monitoring port could not be read, with a message fit for an operator."""


def monitor_base_url(params):
    """monitor_url, or http(s)://monitor_host:monitor_port (https when monitor_ca_file is given)."""
    if params.get("monitor_url"):
        return params["monitor_url"].rstrip("/")
    scheme = "https" if params.get("monitor_ca_file") else "http"
    host = params.get("monitor_host") or params.get("server_host") or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return "{}://{}:{}".format(scheme, host, params.get("monitor_port") or 8222)


class Monitor:
    def __init__(self, base_url, timeout=10.0, ca_file=None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.context = None
        if self.base_url.startswith("https:"):
            try:
                self.context = tls.client_context(ca_file)
            except tls.TLSError as exc:
                raise MonitorError(f"monitor_ca_file: {exc}") from None

    def get(self, endpoint, **query):
        url = f"{self.base_url}/{endpoint}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout, context=self.context) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise MonitorError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise MonitorError(f"cannot read NATS monitoring at {url}: {exc.reason}") from None
        except (TimeoutError, OSError) as exc:
            raise MonitorError(f"cannot read NATS monitoring at {url}: {exc}") from None
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError:
            raise MonitorError(f"{url}: not JSON (is it a NATS monitoring port?): {body[:120]!r}") from None


# -- summaries -------------------------------------------------------------------------------------


def summarise_varz(varz):
    cluster = varz.get("cluster") or {}
    return {
        "server_id": varz.get("server_id"),
        "server_name": varz.get("server_name"),
        "version": varz.get("version"),
        "start": varz.get("start"),
        "uptime": varz.get("uptime"),
        "cpu_percent": varz.get("cpu"),
        "mem_bytes": varz.get("mem"),
        "cores": varz.get("cores"),
        "connections": varz.get("connections"),
        "total_connections": varz.get("total_connections"),
        "max_connections": varz.get("max_connections"),
        "slow_consumers": varz.get("slow_consumers"),
        "subscriptions": varz.get("subscriptions"),
        "in_msgs": varz.get("in_msgs"),
        "out_msgs": varz.get("out_msgs"),
        "in_bytes": varz.get("in_bytes"),
        "out_bytes": varz.get("out_bytes"),
        "routes": varz.get("routes"),
        "cluster_name": cluster.get("name"),
        "auth_required": varz.get("auth_required"),
        "tls_required": varz.get("tls_required", False),
        "jetstream": bool(varz.get("jetstream")),
    }


def _connection(c):
    return {
        "cid": c.get("cid"),
        "name": c.get("name"),
        "ip": c.get("ip"),
        "port": c.get("port"),
        "user": c.get("authorized_user"),
        "lang": c.get("lang"),
        "version": c.get("version"),
        "subscriptions": c.get("subscriptions"),
        "pending_bytes": c.get("pending_bytes"),
        "in_msgs": c.get("in_msgs"),
        "out_msgs": c.get("out_msgs"),
        "start": c.get("start"),
        "last_activity": c.get("last_activity"),
        "idle": c.get("idle"),
        "uptime": c.get("uptime"),
        "rtt": c.get("rtt"),
    }


def summarise_connz(open_connz, closed_connz=None):
    """connz (open) and connz?state=closed -> the connections facts, with the auth failures
    among the closed connections the server still remembers."""
    conns = [_connection(c) for c in open_connz.get("connections") or []]
    result = {
        "count": open_connz.get("num_connections", len(conns)),
        "total": open_connz.get("total", len(conns)),
        "pending_bytes": sum(c["pending_bytes"] or 0 for c in conns),
        "list": sorted(conns, key=lambda c: (-(c["pending_bytes"] or 0), c["cid"] or 0)),
        "auth_failures": None,
    }
    if closed_connz is not None:
        failed = [
            {
                "ip": c.get("ip"),
                "port": c.get("port"),
                "user": c.get("authorized_user"),
                "name": c.get("name"),
                "stop": c.get("stop"),
                "reason": c.get("reason"),
            }
            for c in closed_connz.get("connections") or []
            if c.get("reason") in AUTH_FAILURE_REASONS
        ]
        failed.sort(key=lambda c: c["stop"] or "", reverse=True)
        result["auth_failures"] = {
            "count": len(failed),
            "closed_seen": closed_connz.get("total", 0),
            "recent": failed[:20],
        }
    return result


def summarise_routez(routez, expected=0):
    routes = [
        {
            "remote_id": r.get("remote_id"),
            "remote_name": r.get("remote_name"),
            "ip": r.get("ip"),
            "port": r.get("port"),
            "did_solicit": r.get("did_solicit"),
            "rtt": r.get("rtt"),
            "pending_bytes": r.get("pending_size"),
            "in_msgs": r.get("in_msgs"),
            "out_msgs": r.get("out_msgs"),
            "subscriptions": r.get("subscriptions"),
        }
        for r in routez.get("routes") or []
    ]
    # A server keeps a pool of routes to each peer (NATS 2.10: pool_size, and one per pinned
    # account), so the other servers it reaches are the distinct remote ids, not the count.
    peers = sorted({r["remote_name"] or r["remote_id"] for r in routes if r["remote_id"] or r["remote_name"]})
    return {
        "count": routez.get("num_routes", len(routes)),
        "peers": peers,
        "expected": expected,
        "list": routes,
    }


def summarise_jsz(jsz):
    """jsz -> the JetStream facts; enabled false when the server runs without JetStream."""
    if not jsz or jsz.get("disabled") or "config" not in jsz:
        return {"enabled": False}
    config = jsz.get("config") or {}
    api = jsz.get("api") or {}
    meta = jsz.get("meta_cluster")
    meta_facts = None
    if meta:
        peers = [
            {
                "name": p.get("name"),
                "current": p.get("current"),
                "offline": p.get("offline", False),
                "active_seconds": round(float(p.get("active") or 0) / NANOSECONDS, 3),
                "lag": p.get("lag"),
            }
            for p in meta.get("replicas") or []
        ]
        meta_facts = {
            "name": meta.get("name"),
            "leader": meta.get("leader") or None,
            "cluster_size": meta.get("cluster_size"),
            "peers": peers,
        }
    return {
        "enabled": True,
        "memory_bytes": jsz.get("memory"),
        "storage_bytes": jsz.get("storage"),
        "max_memory": config.get("max_memory"),
        "max_storage": config.get("max_storage"),
        "store_dir": config.get("store_dir"),
        "streams": jsz.get("streams"),
        "consumers": jsz.get("consumers"),
        "messages": jsz.get("messages"),
        "bytes": jsz.get("bytes"),
        "api_total": api.get("total"),
        "api_errors": api.get("errors"),
        "meta_cluster": meta_facts,
    }


def summarise_consumer(info):
    config = info.get("config") or {}
    delivered = info.get("delivered") or {}
    ack_floor = info.get("ack_floor") or {}
    return {
        "name": info.get("name"),
        "durable": bool(config.get("durable_name")),
        "ack_policy": config.get("ack_policy"),
        "filter_subject": config.get("filter_subject"),
        "max_ack_pending": config.get("max_ack_pending"),
        "max_deliver": config.get("max_deliver"),
        "num_pending": info.get("num_pending", 0),
        "num_ack_pending": info.get("num_ack_pending", 0),
        "num_redelivered": info.get("num_redelivered", 0),
        "num_waiting": info.get("num_waiting", 0),
        "delivered_stream_seq": delivered.get("stream_seq"),
        "ack_floor_stream_seq": ack_floor.get("stream_seq"),
        "last_delivered": delivered.get("last_active"),
        "last_ack": ack_floor.get("last_active"),
        "leader": (info.get("cluster") or {}).get("leader"),
    }


def summarise_stream(info, consumers=()):
    config = info.get("config") or {}
    state = info.get("state") or {}
    return {
        "name": config.get("name"),
        "subjects": config.get("subjects") or [],
        "storage": config.get("storage"),
        "retention": config.get("retention"),
        "replicas": config.get("num_replicas"),
        "messages": state.get("messages", 0),
        "bytes": state.get("bytes", 0),
        "first_seq": state.get("first_seq"),
        "last_seq": state.get("last_seq"),
        "first_ts": state.get("first_ts"),
        "last_ts": state.get("last_ts"),
        "consumer_count": state.get("consumer_count", 0),
        "leader": (info.get("cluster") or {}).get("leader"),
        "consumers": [summarise_consumer(c) for c in consumers],
    }


# -- the JetStream API (over module_utils/nats_api.NatsClient) -------------------------------------


def _paged(client, subject, key):
    items, offset = [], 0
    while True:
        reply = client.js_request(subject, {"offset": offset})
        page = reply.get(key) or []
        items.extend(page)
        offset += len(page)
        if not page or offset >= reply.get("total", 0):
            return items


def streams_state(client, names=None):
    """Every stream (or those named) with its consumers, summarised."""
    wanted = list(names) if names else sorted(_paged(client, "$JS.API.STREAM.NAMES", "streams"))
    out = []
    for name in wanted:
        info = client.stream_info(name)
        if info is None:
            out.append({"name": name, "missing": True, "consumers": []})
            continue
        consumers = _paged(client, f"$JS.API.CONSUMER.LIST.{name}", "consumers")
        out.append(summarise_stream(info, sorted(consumers, key=lambda c: c.get("name") or "")))
    return out
