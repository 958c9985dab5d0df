"""Writes the chart's value sets, one YAML values file each (<name>.yaml), that
scripts/check-packaging lints, renders and hands to oracle/test_chart.py; prints each name.

Usage: write_value_sets.py PKI_DIR OUT_DIR, where PKI_DIR holds the ca.crt, tls.crt and tls.key
that the `provided` value set embeds.
"""

import pathlib
import sys

import yaml

pki, out = map(pathlib.Path, sys.argv[1:])
# Keep in step with VALUE_SETS in oracle/test_chart.py.
sets = {
    "defaults": {},
    "cert-manager": {"certificates": {"mode": "certManager"}},
    "cert-manager-issuer": {
        "certificates": {
            "mode": "certManager",
            "certManager": {"issuerRef": {"name": "corporate-ca", "kind": "ClusterIssuer"}},
        }
    },
    "provided": {
        "certificates": {
            "mode": "provided",
            "provided": {
                "tlsCrt": (pki / "tls.crt").read_text(),
                "tlsKey": (pki / "tls.key").read_text(),
                "caBundle": (pki / "ca.crt").read_text(),
            },
        }
    },
    "single-replica": {"replicas": 1},
    "monitoring": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "grafanaDashboard": {"enabled": True},
        }
    },
    # Every optional feature at its defaults, eviction included.
    "operations": {
        "rotationRestarts": {"enabled": True},
        "uninjectedPods": {"enabled": True, "evict": True},
        "denialEvents": {"enabled": True},
    },
    # One feature each, so that each is seen to add its own rules only.
    "rotation-restarts": {
        "rotationRestarts": {"enabled": True, "debounce": "45s", "minInterval": "1h", "maxConcurrent": 5},
    },
    # evict alone implies enabled.
    "uninjected-eviction": {"uninjectedPods": {"evict": True, "evictionInterval": "1m"}},
    "denial-events": {"denialEvents": {"enabled": True}},
    "plan-cache-off": {"planCacheEntries": 0},
    "hardened": {
        "webhook": {"clientCA": (pki / "ca.crt").read_text()},
        "networkPolicy": {
            "enabled": True,
            "webhookFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
        },
    },
}
for name, values in sets.items():
    (out / f"{name}.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    print(name)
