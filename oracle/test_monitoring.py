"""The chart's Prometheus Operator objects and Grafana dashboard, rendered by
scripts/check-packaging: present only when asked, pointed at kvinject's Service, every rule
accepted by Prometheus's own promtool and every alert firing (and staying quiet) as its runbook in
docs/operations.md says. That they name only metrics kvinject exports is checked against a
replica's /metrics in tests/cluster.rs. Needs promtool (Debian's prometheus package), which
scripts/check-packaging installs."""

import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

from test_chart import CHART, FULLNAME, NAMESPACE, ROOT, documents

PROMTOOL = shutil.which("promtool")
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def by_kind(value_set, kind):
    return [d for d in documents(value_set) if d["kind"] == kind]


def dashboards(value_set):
    return [d for d in by_kind(value_set, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]


def rules():
    (rule,) = by_kind("monitoring", "PrometheusRule")
    return rule["spec"]["groups"]


def test_nothing_for_prometheus_operator_or_grafana_unless_asked():
    kinds = {d["kind"] for d in documents("defaults")}
    assert not kinds & MONITORING_KINDS
    assert not dashboards("defaults")
    kinds = {d["kind"] for d in documents("monitoring")}
    assert MONITORING_KINDS <= kinds
    assert len(dashboards("monitoring")) == 1


def test_the_service_monitor_scrapes_kvinjects_health_port():
    (monitor,) = by_kind("monitoring", "ServiceMonitor")
    (service,) = by_kind("monitoring", "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus", "the label a Prometheus selects on"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items(), "it selects kvinject's Service"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert port["port"] == 8080 and endpoint["path"] == "/metrics"


def alerts():
    return [rule for group in rules() for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_summary_and_a_runbook_that_exists():
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in operations.splitlines() if line.startswith("#")}
    for alert in alerts():
        annotations = alert["annotations"]
        assert annotations["summary"].strip(), alert["alert"]
        base, anchor = annotations["runbook_url"].split("#")
        assert base.endswith("docs/operations.md")
        assert anchor == alert["alert"].lower() and anchor in anchors, f"no section {alert['alert']} in docs/operations.md"
        assert alert["labels"]["severity"] in ("critical", "warning")


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory):
    if PROMTOOL is None:
        pytest.fail("promtool is missing: scripts/check-packaging installs Debian's prometheus package")
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rules()}, sort_keys=False))
    return path


def test_promtool_accepts_the_rules(rules_file):
    result = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout, result.stdout


SELECTOR = f'job="{FULLNAME}", namespace="{NAMESPACE}"'

# An unhealthy replica: each alert's condition holds from the start. (series, values)
UNHEALTHY = [
    (f'kvinject_ready{{{SELECTOR}, pod="a"}}', "0x120"),
    (f'kvinject_serving_certificate_expiry_timestamp_seconds{{{SELECTOR}, pod="a"}}', "864000x120"),
    (f'kvinject_admissions_total{{{SELECTOR}, route="mutate", kind="Pod", outcome="denied"}}', "0+10x120"),
    (f'kvinject_denials_total{{{SELECTOR}, route="mutate", reason="annotation"}}', "0+10x120"),
    (f'kvinject_spc_applies_total{{{SELECTOR}, pod="a", result="error"}}', "0+1x120"),
    (f'kvinject_cache_synced{{{SELECTOR}, pod="a", cache="pods"}}', "0x120"),
    (f'kvinject_keyvault_verifications_total{{{SELECTOR}, pod="a", result="unverified"}}', "0+5x120"),
    (f'kvinject_keyvault_verifications_total{{{SELECTOR}, pod="a", result="ok"}}', "0+1x120"),
    # The Lease holder's gauge, its label namespace renamed by the scrape (the target's wins).
    (f'kvinject_uninjected_pods{{{SELECTOR}, pod="a", exported_namespace="shop"}}', "3x120"),
]
# The same replica healthy: 100 days of certificate, few denials, everything synced and verified.
HEALTHY = [
    (f'kvinject_ready{{{SELECTOR}, pod="a"}}', "1x120"),
    (f'kvinject_serving_certificate_expiry_timestamp_seconds{{{SELECTOR}, pod="a"}}', "8640000x120"),
    (f'kvinject_admissions_total{{{SELECTOR}, route="mutate", kind="Pod", outcome="patched"}}', "0+100x120"),
    (f'kvinject_denials_total{{{SELECTOR}, route="mutate", reason="annotation"}}', "0+1x120"),
    (f'kvinject_spc_applies_total{{{SELECTOR}, pod="a", result="error"}}', "0x120"),
    (f'kvinject_cache_synced{{{SELECTOR}, pod="a", cache="pods"}}', "1x120"),
    (f'kvinject_keyvault_verifications_total{{{SELECTOR}, pod="a", result="unverified"}}', "0+1x120"),
    (f'kvinject_keyvault_verifications_total{{{SELECTOR}, pod="a", result="ok"}}', "0+10x120"),
]
# The healthy replica as the Lease holder with uninjectedPods on: the gauge is there, at 0. (Above,
# it is a replica that does not export the gauge: not the holder, or the check is off.)
HEALTHY_HOLDER = HEALTHY + [
    (f'kvinject_uninjected_pods{{{SELECTOR}, pod="a", exported_namespace="shop"}}', "0x120"),
]
# Labels each alert carries besides its rule's, from the series above.
EXTRA_LABELS = {
    "KvinjectCacheNotSynced": {"pod": "a", "cache": "pods"},
    "KvinjectUninjectedPods": {"namespace": "shop"},
}


def expanded(alert):
    """The alert's annotations as Prometheus sends them: {{ $labels.NAME }} filled in."""
    labels = EXTRA_LABELS.get(alert["alert"], {})
    return {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda match: labels[match.group(1)], value)
        for key, value in alert["annotations"].items()
    }


def test_each_alert_fires_when_its_condition_holds_and_only_then(rules_file):
    at = "100m"  # past every rule's `for` and rate window
    unhealthy = [
        {"eval_time": at, "alertname": alert["alert"], "exp_alerts": [{
            "exp_labels": {**alert["labels"], **EXTRA_LABELS.get(alert["alert"], {})},
            "exp_annotations": expanded(alert),
        }]}
        for alert in alerts()
    ]
    healthy = [{"eval_time": at, "alertname": alert["alert"], "exp_alerts": []} for alert in alerts()]
    series = lambda pairs: [{"series": s, "values": v} for s, v in pairs]
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": series(UNHEALTHY), "alert_rule_test": unhealthy},
            {"interval": "1m", "input_series": series(HEALTHY), "alert_rule_test": healthy},
            {"interval": "1m", "input_series": series(HEALTHY_HOLDER), "alert_rule_test": healthy},
            # No replica scraped at all is as bad as none ready.
            {"interval": "1m", "input_series": [], "alert_rule_test": [
                {"eval_time": "10m", "alertname": "KvinjectNoReadyReplica", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "job": FULLNAME, "namespace": NAMESPACE},
                    "exp_annotations": next(a for a in alerts() if a["alert"] == "KvinjectNoReadyReplica")["annotations"],
                }]}]},
        ],
    }
    path = rules_file.parent / "tests.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_the_charts_and_every_panel_queries_kvinject():
    (config_map,) = dashboards("monitoring")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(config_map["data"]["kvinject.json"])
    assert shipped == json.loads((CHART / "dashboards" / "kvinject.json").read_text())
    titles = [panel["title"] for panel in shipped["panels"]]
    assert len(titles) == len(set(titles)) >= 8
    for panel in shipped["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert "kvinject_" in target["expr"], (panel["title"], target["expr"])
