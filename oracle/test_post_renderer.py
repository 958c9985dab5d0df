"""`examples/helm-post-renderer` as Helm runs it: a sample chart rendered with Helm's own Go
library (PyPI helm-python-sdk, as scripts/check-packaging has it), its manifests on the
post-renderer's standard input, what comes out valid, injected and stable under a second pass.
Run by scripts/check-packaging (it needs the packaging venv)."""

import os
import pathlib
import subprocess

import helm_python as helm
import yaml

from conftest import BIN, ROOT, validate

CHART = ROOT / "tests" / "fixtures" / "charts" / "shop"
POST_RENDERER = ROOT / "examples" / "helm-post-renderer"


def helm_render() -> str:
    """The release's manifests as Helm hands them to a post-renderer: one YAML stream."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render({}, name="checkout", namespace="shop", is_install=True)
    return "".join(f"---\n# Source: {source}\n{text}\n" for source, text in sorted(rendered.items())
                   if source.endswith(".yaml"))


def post_render(stream: str) -> subprocess.CompletedProcess:
    # The wrapper runs `kvinject` from the PATH, as on a user's machine.
    env = dict(os.environ, PATH=f"{pathlib.Path(BIN).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([str(POST_RENDERER)], input=stream, capture_output=True, text=True, env=env)


def test_a_rendered_chart_comes_out_injected_valid_and_stable():
    stream = helm_render()
    before = [d for d in yaml.safe_load_all(stream) if d]
    assert {d["kind"] for d in before} == {"Deployment", "Service", "ServiceAccount"}
    result = post_render(stream)
    assert result.returncode == 0, result.stderr
    after = [d for d in yaml.safe_load_all(result.stdout) if d]
    for document in after:
        validate(document)
    spcs = [d for d in after if d["kind"] == "SecretProviderClass"]
    assert len(spcs) == 1
    # Helm installs it in the release's namespace, with the pods.
    assert "namespace" not in spcs[0]["metadata"]
    template = next(d for d in after if d["kind"] == "Deployment")["spec"]["template"]
    (volume,) = template["spec"]["volumes"]
    assert volume["csi"]["volumeAttributes"]["secretProviderClass"] == spcs[0]["metadata"]["name"]
    env = template["spec"]["containers"][0]["env"]
    assert env == [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": spcs[0]["metadata"]["name"], "key": "DB_PASSWORD"}}}]
    for kind in ("Service", "ServiceAccount"):
        assert next(d for d in before if d["kind"] == kind) == next(d for d in after if d["kind"] == kind)
    again = post_render(result.stdout)
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout


def test_a_denial_fails_the_install_with_the_message():
    stream = helm_render().replace("cert/checkout-tls", "blob/checkout-tls")
    result = post_render(stream)
    assert result.returncode != 0 and result.stdout == ""
    assert "Error: Deployment/checkout: kvinject: annotation kvinject.io/file.tls.crt" in result.stderr
