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


def spcs_and_templates(documents):
    spcs = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in documents if d["kind"] == "SecretProviderClass"}
    templates = [(d["metadata"]["namespace"], d["spec"]["template"]) for d in documents if d["kind"] == "Deployment"]
    return spcs, templates


def mounted_spcs(namespace, template, spcs):
    """The SPCs a pod template's CSI volumes mount, each as (volume, SPC)."""
    return [(volume, spcs[(namespace, volume["csi"]["volumeAttributes"]["secretProviderClass"])])
            for volume in template["spec"].get("volumes", []) if "csi" in volume]


def test_the_ingress_secret_is_synced_as_tls_by_a_pod_of_its_namespace():
    documents = inject(ROOT / "examples" / "ingress-tls.yaml")
    spcs, templates = spcs_and_templates(documents)
    ingress = next(d for d in documents if d["kind"] == "Ingress")
    namespace = ingress["metadata"]["namespace"]
    for tls in ingress["spec"]["tls"]:
        syncing = [(spc, secret) for ns, template in templates if ns == namespace
                   for _, spc in mounted_spcs(ns, template, spcs)
                   for secret in spc["spec"].get("secretObjects", []) if secret["secretName"] == tls["secretName"]]
        assert len(syncing) == 1, f"Secret {tls['secretName']} must be synced by exactly one mounted SPC"
        spc, secret = syncing[0]
        assert secret["type"] == "kubernetes.io/tls"
        assert [d["key"] for d in secret["data"]] == ["tls.key", "tls.crt"]
        (alias,) = {d["objectName"] for d in secret["data"]}
        objects = [yaml.safe_load(text) for text in yaml.safe_load(spc["spec"]["parameters"]["objects"])["array"]]
        (entry,) = [o for o in objects if o.get("objectAlias", o["objectName"]) == alias]
        assert entry == {"objectName": "shop-wildcard-cert", "objectType": "secret", "objectAlias": alias}


def test_two_vaults_give_two_spcs_and_every_env_var_reads_its_vaults_secret():
    documents = inject(ROOT / "examples" / "several-vaults.yaml")
    spcs, templates = spcs_and_templates(documents)
    ((namespace, template),) = templates
    mounted = mounted_spcs(namespace, template, spcs)
    assert [(v["name"], spc["spec"]["parameters"]["keyvaultName"]) for v, spc in mounted] == [
        ("kvinject-secrets", "shop-prod-kv"), ("kvinject-secrets-platform-kv", "platform-kv")]
    assert template["metadata"]["annotations"]["kvinject.io/injected"] == ",".join(spc["metadata"]["name"] for _, spc in mounted)
    paths = [m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]]
    assert paths == ["/mnt/secrets-store", "/mnt/secrets-store-platform-kv"]
    assert not any(b.startswith(a.rstrip("/") + "/") for a in paths for b in paths), "no CSI mount inside another"
    vault_of = {"DB_PASSWORD": "shop-prod-kv", "DATADOG_API_KEY": "platform-kv"}
    secrets = {spc["metadata"]["name"]: spc for _, spc in mounted}
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in template["spec"]["containers"][0]["env"] if "valueFrom" in e}
    assert set(refs) == set(vault_of)
    for var, ref in refs.items():
        spc = secrets[ref["name"]]
        assert spc["spec"]["parameters"]["keyvaultName"] == vault_of[var]
        assert any(d["key"] == var for s in spc["spec"]["secretObjects"] for d in s["data"])


def test_the_validator_can_fail():
    # A guard against an oracle that accepts everything.
    with pytest.raises(Exception):
        validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "imagee": "x"}]}})
    spc = {"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass", "metadata": {"name": "s"},
           "spec": {"provider": "azure", "parameters": {"objects": "array:\n  - |\n    objectName: a\n    objectType: blob\n"}}}
    with pytest.raises(AssertionError):
        validate(spc)
    tls = {"secretName": "t", "type": "kubernetes.io/tls",
           "data": [{"objectName": "a", "key": "tls.key"}, {"objectName": "a", "key": "tls.crt"}]}
    spc["spec"]["secretObjects"] = [tls]
    spc["spec"]["parameters"]["objects"] = "array:\n  - |\n    objectName: a\n    objectType: cert\n"
    with pytest.raises(AssertionError, match="objectType"):
        validate(spc)
    spc["spec"]["parameters"]["objects"] = "array:\n  - |\n    objectName: a\n    objectType: secret\n"
    validate(spc)
    tls["data"].pop()
    with pytest.raises(AssertionError):
        validate(spc)
    del spc["spec"]["secretObjects"]
    spc["spec"]["unknownField"] = 1
    with pytest.raises(Exception):
        validate(spc)
