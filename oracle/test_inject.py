"""`kvinject inject` over every example: every output document valid against the Kubernetes
schema (native kinds) or the upstream CRD schema (SecretProviderClass, AAD Pod Identity), and the
generated SecretProviderClasses follow the Azure provider's rules."""

import datetime
import json
import subprocess

import pytest
import yaml

from conftest import BIN, ROOT, validate

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml")) + sorted((ROOT / "tests" / "fixtures" / "manifests").glob("*.yaml"))


def inject(path, output="yaml") -> list:
    result = subprocess.run([BIN, "inject", "-f", str(path), "-o", output], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if output == "json":
        decoder, text, documents, index = json.JSONDecoder(), result.stdout, [], 0
        while text[index:].strip():
            document, index = decoder.raw_decode(text, index + len(text[index:]) - len(text[index:].lstrip()))
            documents.append(document)
        return documents
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_yaml_output_reads_back_the_same_under_yaml_1_1(path):
    # PyYAML reads YAML 1.1, as Kubernetes' YAML decoder does: `yes`, `0440`, dates written plain
    # would come back as booleans, numbers, timestamps.
    assert inject(path, "yaml") == inject(path, "json")
    before = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    after = inject(path)
    for original in before:
        if original["kind"] in ("ConfigMap", "Service", "Namespace", "ServiceAccount"):
            assert original in after, f"{original['kind']}/{original['metadata']['name']} changed"


# Strings that a YAML 1.1 reader (Kubernetes', PyYAML's) turns into something else when written
# plain: booleans, octal and float numbers, sexagesimals, timestamps, null, merge keys.
TRICKY_STRINGS = ["0440", "yes", "No", "on", "OFF", "y", "n", "1e3", "0x1f", "12:30", "2026-01-01",
                  "2026-01-01T10:00:00Z", "~", "null", ".inf", "-.nan", "<<", "=", "+1", "0o17", "1_000"]


def test_other_documents_come_back_equal_under_yaml_1_1(tmp_path):
    # Given as JSON, so the input's meaning is not a YAML question; read back as YAML 1.1.
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                  "data": {f"k{i}": value for i, value in enumerate(TRICKY_STRINGS)}}
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
              "spec": {"anything": [1, 2.5, None, True, "yes"], "y": "n", "on": {"off": "~"}}}
    source = tmp_path / "in.json"
    source.write_text(json.dumps(config_map) + "\n" + json.dumps(widget))
    result = subprocess.run([BIN, "inject", "-f", str(source), "-o", "yaml"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert list(yaml.safe_load_all(result.stdout)) == [config_map, widget], result.stdout


def test_the_yaml_1_1_check_can_fail():
    # The reader above is YAML 1.1: written plain, these would not come back as strings.
    read = yaml.safe_load("a: 0440\nb: yes\nc: 12:30\nd: 2026-01-01\ne: ~\nf: 0x1f\n")
    assert read == {"a": 288, "b": True, "c": 750, "d": datetime.date(2026, 1, 1), "e": None, "f": 31}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_output_document_is_valid(path):
    documents = inject(path)
    assert documents
    for document in documents:
        validate(document)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_input_examples_are_valid_too(path):
    # The examples teach users: they must be valid before kvinject touches them.
    for document in yaml.safe_load_all(path.read_text()):
        validate(document)


def test_generated_spc_is_what_the_pods_reference():
    documents = inject(ROOT / "examples" / "workload-identity.yaml")
    spcs = {d["metadata"]["name"]: d for d in documents if d["kind"] == "SecretProviderClass"}
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "kvinject-secrets")
    name = volume["csi"]["volumeAttributes"]["secretProviderClass"]
    assert name in spcs
    assert template["metadata"]["annotations"]["kvinject.io/injected"] == name
    synced = {d["key"] for s in spcs[name]["spec"]["secretObjects"] for d in s["data"]}
    for container in template["spec"]["containers"]:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == spcs[name]["spec"]["secretObjects"][0]["secretName"]
                assert ref["key"] in synced


def test_the_validator_can_fail():
    # A guard against an oracle that accepts everything.
    with pytest.raises(Exception):
        validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "imagee": "x"}]}})
    spc = {"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass", "metadata": {"name": "s"},
           "spec": {"provider": "azure", "parameters": {"objects": "array:\n  - |\n    objectName: a\n    objectType: blob\n"}}}
    with pytest.raises(AssertionError):
        validate(spc)
    spc["spec"]["parameters"]["objects"] = "array:\n  - |\n    objectName: a\n    objectType: secret\n"
    spc["spec"]["unknownField"] = 1
    with pytest.raises(Exception):
        validate(spc)
