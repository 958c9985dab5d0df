"""Every admission fixture through a running `kvinject serve` over TLS; each patch applied by
kubectl and by Python jsonpatch; every result validated against the Kubernetes schema."""

import json
import pathlib

import jsonpatch
import pytest

from conftest import ROOT, kubectl_patch, validate

REVIEWS = sorted((ROOT / "tests" / "fixtures" / "reviews").glob("*.json"))
VALIDATIONS = [
    (path, route)
    for directory, route in (("workloads", "/validate-workloads"), ("pod-identity", "/validate-pod-identity"))
    for path in sorted((ROOT / "tests" / "fixtures" / directory).glob("*.json"))
]
INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.json"))


@pytest.mark.parametrize("path", REVIEWS, ids=lambda p: p.stem)
def test_review(webhook, path: pathlib.Path, tmp_path):
    review = json.loads(path.read_text())
    response = webhook.review(review)
    kind = path.stem.split("-")[0]
    if kind == "deny":
        assert response["allowed"] is False
        assert response["status"]["code"] == 403
        assert response["status"]["message"].startswith("kvinject: ")
        assert "patch" not in response
        return
    assert response["allowed"] is True
    if kind == "allow":
        assert "patch" not in response
        return
    patch = response["patch"]
    assert response["patchType"] == "JSONPatch"
    assert all(op["op"] == "add" for op in patch), "kvinject never removes or replaces"
    pod = review["request"]["object"]
    by_python = jsonpatch.apply_patch(pod, patch)
    by_kubectl = kubectl_patch(pod, patch, tmp_path)
    assert by_python == by_kubectl, "the two RFC 6902 implementations disagree"
    # As stored: the API server fills in the namespace of controller-made pods.
    stored = dict(by_python, metadata=dict(by_python["metadata"], namespace=review["request"]["namespace"]))
    validate(stored)
    again = dict(review, request=dict(review["request"], object=by_python))
    second = webhook.review(again)
    assert second["allowed"] is True and "patch" not in second, "second pass must be empty"


# Retired apiVersions the schemas no longer hold (batch/v1beta1 went in Kubernetes 1.25, the
# oldest schemas kubernetes-validate ships): such a fixture is checked as its successor, same shape.
SUCCESSORS = {"batch/v1beta1": "batch/v1"}


@pytest.mark.parametrize("path,route", VALIDATIONS, ids=lambda v: v.stem if hasattr(v, "stem") else v)
def test_validation(webhook, path: pathlib.Path, route: str):
    review = json.loads(path.read_text())
    # The object under review is itself valid: kvinject judges only what is its business.
    under_review = review["request"]["object"]
    version = SUCCESSORS.get(under_review["apiVersion"], under_review["apiVersion"])
    validate(dict(under_review, apiVersion=version, metadata=dict(under_review["metadata"], namespace="shop")))
    response = webhook.review(review, path=route)
    assert "patch" not in response and "patchType" not in response, "validation never patches"
    kind = path.stem.split("-")[0]
    assert response["allowed"] is (kind != "deny")
    if kind == "deny":
        assert response["status"]["code"] == 403
        assert response["status"]["message"].startswith("kvinject: ")
    assert ("warnings" in response) is (kind == "warn")


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_body_is_400_and_the_server_keeps_serving(webhook, path: pathlib.Path):
    status, body = webhook.post(path.read_bytes())
    assert status == 400, body
    assert body.startswith(b"kvinject: ")
    status, _ = webhook.post((ROOT / "tests" / "fixtures" / "reviews" / "allow-update.json").read_bytes())
    assert status == 200


def test_wrong_content_type_is_415(webhook):
    status, _ = webhook.post(b"{}", content_type="text/plain")
    assert status == 415


def test_the_spc_kvinject_applies_to_a_cluster_is_valid():
    # Written by `cargo test` (tests/cluster.rs) from the server-side apply body kvinject sent.
    path = ROOT / "target" / "tmp" / "applied-spc.json"
    assert path.exists(), "run `cargo test` first: it records the applied SecretProviderClass"
    spc = json.loads(path.read_text())
    assert spc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kvinject"
    assert "kvinject.io/last-used" in spc["metadata"]["annotations"]
    validate(spc)
