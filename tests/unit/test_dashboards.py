"""The Grafana dashboards parse, are complete, and the PromQL name extraction is right."""

import pytest
from support import dashboards


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (job) (up{job="audit-api"})', {"up"}),
        ("histogram_quantile(0.99, sum by (le, route) (rate(x_bucket[5m])))", {"x_bucket"}),
        ('1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))', {"node_cpu_seconds_total"}),
        ("a / on (instance) group_left (x) b > 1e3", {"a", "b"}),
        ('max(y{name=~"rate(.*)"}) or vector(0)', {"y"}),
    ],
)
def test_metric_names(expr, names):
    assert dashboards.metric_names(expr) == names


def test_dashboards_parse_and_are_provisionable():
    found = dashboards.load()
    assert set(found) == {"audit-service.json", "audit-infrastructure.json"}
    uids = set()
    for name, dash in found.items():
        assert dash["uid"] and dash["title"], name
        uids.add(dash["uid"])
        assert dash["panels"], name
        for panel in dash["panels"]:
            assert panel["targets"], (name, panel["title"])
            # Every panel reads the provisioned datasource (roles/grafana/templates/datasource.yml.j2).
            assert panel["datasource"] == {"type": "prometheus", "uid": "audit-prometheus"}, (
                name,
                panel["title"],
            )
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        assert all(dashboards.metric_names(q) for q in dashboards.queries(dash)), name
    assert len(uids) == len(found)
