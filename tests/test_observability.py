"""Logs and metrics: the request line, redaction, folding of repeats, and /metrics."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from proxy.log import RepeatFolder, build_formatter, redact_text, register_secret
from proxy.metrics import Metrics
from proxy.standin.insights import FIXTURE_ORG

from .conftest import SAMPLE_QUERY, proxy_config

VARIABLES = {"org": {"orgId": FIXTURE_ORG.uuid}}


def request_lines(access_log) -> list[dict]:
    return access_log.lines()


async def test_request_line_fields_hit_and_miss(proxy, access_log):
    """Each request logs one line with id, method, path, status, cache and durations."""
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES,
                                    headers={"X-Request-ID": "trace-42"})
    miss, hit = request_lines(access_log)[-2:]
    assert miss["cache"] == "fwd=miss; stored"
    assert miss["upstream_status"] == 200
    assert miss["upstream_ms"] is not None
    assert hit["request_id"] == "trace-42"
    assert hit["cache"].startswith("hit; ttl=")
    assert hit["upstream_status"] is None
    for line in (miss, hit):
        assert line["method"] == "POST"
        assert line["path"] == "/query-api"
        assert line["status"] == 200
        assert line["duration_ms"] >= 0
        assert line["remote"] == "127.0.0.1"


async def test_request_line_error_code_no_query_string(proxy, access_log):
    """An error's line carries its code, and the path is logged without the query string."""
    async with proxy.session.get(proxy.url, params={"query": "{ a "}) as response:
        await response.read()
    line = request_lines(access_log)[-1]
    assert line["status"] == 400
    assert line["code"] == "GRAPHQL_PARSE_FAILED"
    assert line["path"] == "/query-api"
    assert "query=" not in json.dumps(line)


async def test_request_line_names_client(stand_in, start_proxy, access_log):
    """With client keys, the line carries the client's name."""
    from proxy.security import hash_client_key
    raw = proxy_config(stand_in, clients=[{"name": "grafana",
                                           "key_hash": hash_client_key("k" * 32)}])
    proxy = await start_proxy(raw)
    await proxy.query(SAMPLE_QUERY, VARIABLES, headers={"Authorization": "Bearer " + "k" * 32})
    assert request_lines(access_log)[-1]["client"] == "grafana"


def render(record_args: dict, use_json: bool = True) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(build_formatter(use_json))
    logger = logging.getLogger("aiohttp.server.test-render")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning(record_args["message"])
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_foreign_records_json_and_redacted():
    """aiohttp's stdlib records are rendered as JSON through the same redaction."""
    register_secret("registered-secret-value")
    output = render({"message": "Authorization: Bearer abcdefghijklmnop and "
                                "registered-secret-value and eyJhbGciOi.eyJzdWIiOi.c2ln"})
    line = json.loads(output)
    assert line["logger"] == "aiohttp.server.test-render"
    assert "abcdefghijklmnop" not in output
    assert "registered-secret-value" not in output
    assert "eyJhbGciOi.eyJzdWIiOi" not in output


def test_console_format_redacted():
    """The console renderer gets the same redaction."""
    output = render({"message": "basic dXNlcjpwYXNzd29yZA=="}, use_json=False)
    assert "dXNlcjpwYXNzd29yZA" not in output


def test_redact_text_keeps_fingerprints():
    """Redaction leaves fingerprints and ordinary words alone."""
    assert redact_text("fingerprint 8cfef8a122c9 obtained") == "fingerprint 8cfef8a122c9 obtained"


def test_repeat_folder_counts_repeats():
    """A repeated warning passes once per window; the next one carries the count."""
    folder = RepeatFolder(window_s=60)
    event = {"event": "token.fetch_failed", "error": "down"}
    assert folder(None, "warning", dict(event)) == event
    for _ in range(5):
        with pytest.raises(structlog.DropEvent):
            folder(None, "warning", dict(event))
    folder._seen[("token.fetch_failed", "down")] = (0.0, 5)
    assert folder(None, "warning", dict(event))["repeated"] == 5
    assert folder(None, "info", {"event": "request"}) == {"event": "request"}


async def metrics_of(proxy) -> dict[str, float]:
    async with proxy.session.get(proxy.admin_url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def test_metrics_parse_and_move(proxy):
    """/metrics parses as Prometheus text, and counters move as requests flow."""
    before = await metrics_of(proxy)
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    await proxy.query(SAMPLE_QUERY, VARIABLES)
    await proxy.query("{ a ")
    after = await metrics_of(proxy)
    ok = "insights_proxy_requests_total{cache=fwd=miss,client=,code=,status=200}"
    hit = "insights_proxy_requests_total{cache=hit,client=,code=,status=200}"
    bad = "insights_proxy_requests_total{cache=fwd=bypass,client=,code=GRAPHQL_PARSE_FAILED,status=400}"
    assert after[ok] == 1
    assert after[hit] == 1
    assert after[bad] == 1
    assert after["insights_proxy_cache_hits_total{}"] == before.get(
        "insights_proxy_cache_hits_total{}", 0) + 1
    assert after["insights_proxy_cache_misses_total{}"] >= 1
    assert after["insights_proxy_token_fetches_total{outcome=success}"] >= 1
    assert after["insights_proxy_token_expires_in_seconds{}"] > 0
    assert after["insights_proxy_cache_entries{}"] == 1
    assert after["insights_proxy_cache_bytes{}"] > 0
    assert after["insights_proxy_upstream_duration_seconds_count{}"] == 1
    assert after["insights_proxy_request_duration_seconds_count{}"] == 3
    assert after["insights_proxy_overhead_seconds_count{}"] == 3
    assert "insights_proxy_build_info{python=" in "".join(after)


def test_metrics_histogram_buckets_and_request_series():
    """Per-request metrics count into "less than or equal" buckets and parse as Prometheus text."""
    metrics = Metrics()
    for elapsed in (0.004, 0.005, 0.02, 45.0):
        metrics.record_request(200, "", "hit", "", elapsed, None, None)
    metrics.record_request(502, "UPSTREAM_ERROR", "fwd=miss", "team", 0.3, 0.25, 502)
    samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    buckets = "insights_proxy_request_duration_seconds_bucket"
    assert samples[f"{buckets}{{le=0.005}}"] == 2  # 0.005 itself falls in the 0.005 bucket
    assert samples[f"{buckets}{{le=0.025}}"] == 3
    assert samples[f"{buckets}{{le=0.5}}"] == 4
    assert samples[f"{buckets}{{le=30.0}}"] == 4
    assert samples[f"{buckets}{{le=+Inf}}"] == 5
    assert samples["insights_proxy_request_duration_seconds_count{}"] == 5
    assert samples["insights_proxy_request_duration_seconds_sum{}"] == pytest.approx(45.329)
    assert samples["insights_proxy_requests_total{cache=hit,client=,code=,status=200}"] == 4
    assert samples["insights_proxy_requests_total{cache=fwd=miss,client=team,code=UPSTREAM_ERROR,status=502}"] == 1
    assert samples["insights_proxy_upstream_requests_total{status=502}"] == 1
    assert samples["insights_proxy_overhead_seconds_count{}"] == 5
    assert samples["insights_proxy_upstream_duration_seconds_count{}"] == 1


def test_repeat_folder_passes_unexpected_faults():
    """Events without an error field, such as unexpected faults, are never folded."""
    folder = RepeatFolder(window_s=60)
    event = {"event": "request.failed", "request_id": "a"}
    for _ in range(3):
        assert folder(None, "error", dict(event)) == event


def test_repeat_filter_folds_foreign_records():
    """aiohttp's repeated warnings pass once per window and then carry a count."""
    from proxy.log import RepeatFilter

    flood = RepeatFilter(window_s=60)
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                               "Error handling request", None, None)
    assert flood.filter(record)
    assert not flood.filter(record)
    assert not flood.filter(record)
    flood._seen[("aiohttp.server", "Error handling request")] = (0.0, 2)
    assert flood.filter(record)
    assert "repeated 2 times" in record.msg


async def test_rate_limited_line_names_client(stand_in, start_proxy, access_log):
    """A 429 request line carries the client that went over its limit."""
    from proxy.security import hash_client_key
    raw = proxy_config(stand_in, clients=[{"name": "dashboards", "requests_per_minute": 1,
                                           "key_hash": hash_client_key("d" * 32)}])
    proxy = await start_proxy(raw)
    for _ in range(2):
        response, _ = await proxy.query(SAMPLE_QUERY, VARIABLES,
                                        headers={"Authorization": "Bearer " + "d" * 32})
    assert response.status == 429
    line = request_lines(access_log)[-1]
    assert line["status"] == 429
    assert line["client"] == "dashboards"


def test_access_log_renders_and_redacts():
    """The request line is JSON with the common keys, and a credential in the path is masked."""
    from proxy.log import AccessLog

    access = AccessLog()
    access.stream = io.StringIO()
    access.configure(use_json=True, level="info")
    access.write({"request_id": "r1", "path": "/x/Bearer abcdefghijklmnopqrst", "status": 404})
    line = json.loads(access.stream.getvalue())
    assert line["event"] == "request"
    assert line["level"] == "info"
    assert line["logger"] == "insights_proxy.access"
    assert line["timestamp"].endswith("Z")
    assert "abcdefghijklmnopqrst" not in line["path"]


def test_access_log_console_and_level():
    """Console format renders key=value pairs; a level above info turns the line off."""
    from proxy.log import AccessLog

    access = AccessLog()
    access.stream = io.StringIO()
    access.configure(use_json=False, level="info")
    access.write({"request_id": "r2", "status": 200, "client": None})
    text = access.stream.getvalue()
    assert "request_id=r2" in text
    assert "status=200" in text
    assert "client=" not in text
    access.configure(use_json=True, level="warning")
    access.write({"request_id": "r3"})
    assert "r3" not in access.stream.getvalue()
