"""Runs Helm's lint (strict, Kubernetes v1.34.0, namespace kvinject) on charts/kvinject once per
values file in the directory given as the only argument; prints each value set's findings and
exits 1 if any value set has one.

scripts/check-packaging runs it on the value sets of write_value_sets.py.
"""

import pathlib
import sys

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "kvinject"

failed = False
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.yaml")):
    values = helm.values_from_yaml(path.read_text())
    report = helm.lint(CHART, values, strict=True, namespace="kvinject", kube_version="v1.34.0")
    findings = report["messages"] + [{"error": error} for error in report["errors"]]
    print(f"{path.stem}: {report['total_charts_linted']} chart, {len(findings)} findings")
    for finding in findings:
        print(f"  {finding.get('path', '')}: {finding['error']}")
    failed |= bool(findings) or report["total_charts_linted"] != 1
sys.exit(1 if failed else 0)
