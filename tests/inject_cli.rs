//! `kvinject inject` and `kvinject certs` as a user runs them, and the promise that `inject` and
//! the webhook give the same answer for the same input.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use kvinject::core::facts::DocumentFacts;
use kvinject::core::plan::Settings;
use kvinject::offline::manifest::{self, Format};
use kvinject::webhook::admission;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kvinject");
const EXAMPLES: [&str; 6] = [
    "aad-pod-identity",
    "cronjob",
    "ingress-tls",
    "reference-mode",
    "several-vaults",
    "workload-identity",
];

fn kvinject(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn examples_inject_and_reinjecting_changes_nothing() {
    for example in EXAMPLES {
        let path = format!("examples/{example}.yaml");
        let first = stdout(&kvinject(&["inject", "-f", &path], None));
        insta::assert_snapshot!(format!("inject-{example}"), first);
        let second = stdout(&kvinject(&["inject", "-f", "-"], Some(first.as_bytes())));
        assert_eq!(
            first, second,
            "{example}: inject on its own output must print it unchanged"
        );

        let input = manifest::parse(&std::fs::read(&path).unwrap(), Format::Yaml, &path).unwrap();
        let output = manifest::parse(first.as_bytes(), Format::Yaml, "output").unwrap();
        let generated = output.len() - input.len();
        let spcs = output
            .iter()
            .filter(|d| d["kind"] == "SecretProviderClass")
            .count()
            - input
                .iter()
                .filter(|d| d["kind"] == "SecretProviderClass")
                .count();
        assert_eq!(generated, spcs, "{example}: only SPCs are added");
        let expected_generated = match example {
            "reference-mode" => 0,
            "several-vaults" => 2,
            _ => 1,
        };
        assert_eq!(generated, expected_generated, "{example}");
        for (before, after) in input.iter().zip(&output) {
            let mutated = ["Pod", "Deployment", "CronJob"]
                .contains(&before["kind"].as_str().unwrap())
                && before
                    .to_string()
                    .contains(r#""kvinject.io/inject":"true""#);
            assert_eq!(
                before == after,
                !mutated,
                "{example}: {} changed iff it holds a labelled pod",
                before["kind"]
            );
        }
    }
}

#[test]
fn every_workload_kind_is_mutated_through_its_pod_template() {
    let path = "tests/fixtures/manifests/all-kinds.yaml";
    let output = stdout(&kvinject(&["inject", "-f", path], None));
    let input = manifest::parse(&std::fs::read(path).unwrap(), Format::Yaml, path).unwrap();
    let documents = manifest::parse(output.as_bytes(), Format::Yaml, "output").unwrap();
    assert_eq!(
        documents.len(),
        input.len() + 1,
        "one SPC shared by every workload"
    );
    let spc = documents.last().unwrap();
    assert_eq!(spc["kind"], "SecretProviderClass");
    let name = spc["metadata"]["name"].as_str().unwrap();
    for (before, after) in input.iter().zip(&documents) {
        let kind = before["kind"].as_str().unwrap();
        let template = match kind {
            "Pod" => "",
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template",
            "CronJob" => "/spec/jobTemplate/spec/template",
            _ => {
                assert_eq!(before, after, "{kind} left alone");
                continue;
            }
        };
        let pod = after.pointer(template).unwrap();
        assert_eq!(
            pod["metadata"]["annotations"]["kvinject.io/injected"], name,
            "{kind}"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"], name,
            "{kind}"
        );
        assert_eq!(
            pod["spec"]["volumes"][0]["name"], "kvinject-secrets",
            "{kind}"
        );
    }
}

#[test]
fn warnings_go_to_stderr_and_manifests_to_stdout() {
    let output = kvinject(&["inject", "-f", "examples/aad-pod-identity.yaml"], None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Warning: Pod/invoice-worker: kvinject: AAD Pod Identity"),
        "{stderr}"
    );
    assert!(!stdout(&output).contains("Warning"));
}

#[test]
fn a_retired_api_version_passes_through_unchanged_with_a_warning_naming_the_one_to_use() {
    let daemonset = |labels: &str| {
        format!(
            "apiVersion: extensions/v1beta1\nkind: DaemonSet\nmetadata:\n  name: node-agent\n\
             spec:\n  template:\n    metadata:\n      labels: {{{labels}}}\n      annotations:\n        \
             app: agent\n    spec:\n      containers:\n      - name: agent\n        image: agent:1\n"
        )
    };
    let labelled = daemonset("kvinject.io/inject: \"true\"");
    let output = kvinject(&["inject", "-f", "-"], Some(labelled.as_bytes()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "DaemonSet/node-agent: kvinject: DaemonSet of apiVersion extensions/v1beta1 is not one \
             kvinject reads: kvinject.io/inject in its pod template"
        ) && stderr.contains("use apiVersion apps/v1"),
        "{stderr}"
    );
    let documents = manifest::parse(stdout(&output).as_bytes(), Format::Yaml, "out").unwrap();
    let input = manifest::parse(labelled.as_bytes(), Format::Yaml, "in").unwrap();
    assert_eq!(documents, input, "left as it was");
    // Without kvinject keys in the template, nothing to say.
    let plain = kvinject(
        &["inject", "-f", "-"],
        Some(daemonset("app: agent").as_bytes()),
    );
    assert!(plain.status.success());
    assert_eq!(String::from_utf8_lossy(&plain.stderr), "");
}

/// As the webhook would: the second workload asking for Secret `shop-tls` from another
/// certificate is denied, because the first one's SPC syncs it by then; the same certificate is
/// fine, and `inject` reproduces its own output.
#[test]
fn two_workloads_filling_one_tls_secret_from_two_certificates_are_refused() {
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n  annotations:\n    \
                     kvinject.io/vault: web-kv\n    kvinject.io/tenant-id: 72f988bf-86f1-41af-91ab-2d7cd011db47\n\
                     ---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: web\n  \
                     annotations:\n    azure.workload.identity/client-id: 5e2c6f4a-9d1b-4c3e-8a7f-0b1c2d3e4f50\n";
    let pod = |name: &str, certificate: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: web\n  labels:\n    \
             kvinject.io/inject: \"true\"\n  annotations:\n    kvinject.io/tls-secret.shop-tls: {certificate}\n\
             spec:\n  containers:\n    - name: c\n      image: example/c:1\n"
        )
    };
    let clash = format!(
        "{namespace}{}{}",
        pod("a", "cert-one"),
        pod("b", "cert-two")
    );
    let output = kvinject(&["inject", "-f", "-"], Some(clash.as_bytes()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && output.stdout.is_empty(),
        "{stderr}"
    );
    assert!(
        stderr.contains("Error: Pod/b: kvinject: annotation kvinject.io/tls-secret.shop-tls")
            && stderr.contains("synced from certificate web-kv/cert-one"),
        "{stderr}"
    );
    assert!(!stderr.contains("Pod/a"), "{stderr}");

    let same = format!(
        "{namespace}{}{}",
        pod("a", "cert-one"),
        pod("b", "cert-one")
    );
    let first = stdout(&kvinject(&["inject", "-f", "-"], Some(same.as_bytes())));
    let second = stdout(&kvinject(&["inject", "-f", "-"], Some(first.as_bytes())));
    assert_eq!(first, second);
}

#[test]
fn a_directory_reads_every_manifest_in_name_order() {
    let all = stdout(&kvinject(&["inject", "-f", "examples"], None));
    let mut concatenated = String::new();
    for example in EXAMPLES {
        concatenated
            .push_str(&std::fs::read_to_string(format!("examples/{example}.yaml")).unwrap());
        concatenated.push_str("\n---\n");
    }
    let from_stdin = stdout(&kvinject(
        &["inject", "-f", "-"],
        Some(concatenated.as_bytes()),
    ));
    assert_eq!(all, from_stdin);
}

#[test]
fn json_in_json_out_and_lists() {
    let documents = manifest::parse(
        &std::fs::read("examples/workload-identity.yaml").unwrap(),
        Format::Yaml,
        "x",
    )
    .unwrap();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": documents});
    let output = stdout(&kvinject(
        &["inject", "-f", "-"],
        Some(list.to_string().as_bytes()),
    ));
    let values = manifest::parse(output.as_bytes(), Format::Json, "output").unwrap();
    assert_eq!(values.len(), 2, "the List, then the generated SPC");
    assert_eq!(values[0]["kind"], "List");
    let deployment = &values[0]["items"][2];
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["kvinject.io/injected"],
        values[1]["metadata"]["name"]
    );
    // And back again: the generated SPC is recognised in the input, nothing is added.
    let again = stdout(&kvinject(&["inject", "-f", "-"], Some(output.as_bytes())));
    assert_eq!(output, again);
    // YAML on request.
    let yaml = stdout(&kvinject(
        &["inject", "-f", "-", "-o", "yaml"],
        Some(list.to_string().as_bytes()),
    ));
    assert!(yaml.starts_with("apiVersion: v1\nkind: List\n"), "{yaml}");
}

#[test]
fn a_denial_prints_the_webhook_message_and_exits_non_zero() {
    let input = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n    kvinject.io/inject: \"true\"\n  annotations:\n    \
                 kvinject.io/env.DB: \"../../etc/shadow\"\nspec:\n  containers:\n  - name: app\n    image: x\n";
    let output = kvinject(&["inject", "-f", "-"], Some(input.as_bytes()));
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "nothing half-done on stdout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("Error: Pod/p: kvinject: annotation kvinject.io/env.DB: reference"),
        "{stderr}"
    );

    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "default",
        "operation": "CREATE", "userInfo": {}, "object": manifest::parse(input.as_bytes(), Format::Yaml, "x").unwrap()[0]}});
    let answered = admission::review(
        review.to_string().as_bytes(),
        &DocumentFacts::default(),
        &Settings::new(None, None, "kvinject"),
    )
    .unwrap();
    let message = answered.denial_message().unwrap().to_owned();
    assert!(
        stderr.contains(&message),
        "same message as the webhook: {message}"
    );
}

#[test]
fn flags_give_defaults_and_the_namespace() {
    let input = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  annotations:\n    \
                 azure.workload.identity/client-id: 5e2c6f4a-9d1b-4c3e-8a7f-0b1c2d3e4f50\n---\napiVersion: v1\nkind: Pod\n\
                 metadata:\n  name: p\n  labels:\n    kvinject.io/inject: \"true\"\n  annotations:\n    kvinject.io/env.A: a\n\
                 spec:\n  containers:\n  - name: app\n    image: x\n";
    let output = kvinject(&["inject", "-f", "-"], Some(input.as_bytes()));
    assert_eq!(output.status.code(), Some(1), "no vault anywhere");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no kvinject.io/vault"));
    let with_flags = [
        "inject",
        "-f",
        "-",
        "-n",
        "team-a",
        "--default-vault",
        "flag-kv",
        "--default-tenant-id",
        "72f988bf-86f1-41af-91ab-2d7cd011db47",
    ];
    let output = stdout(&kvinject(&with_flags, Some(input.as_bytes())));
    let documents = manifest::parse(output.as_bytes(), Format::Yaml, "out").unwrap();
    let spc = documents.last().unwrap();
    // The facts of --namespace were read (the ServiceAccount without a namespace is found), and
    // the SPC, like its pod, names no namespace: both go where they are applied
    // (`kubectl apply -n`, a Helm release), never apart.
    assert_eq!(spc["kind"], "SecretProviderClass");
    assert!(
        spc["metadata"].get("namespace").is_none(),
        "{}",
        spc["metadata"]
    );
    assert_eq!(spc["spec"]["parameters"]["keyvaultName"], "flag-kv");
    let again = stdout(&kvinject(&with_flags, Some(output.as_bytes())));
    assert_eq!(again, output, "the SPC without a namespace is found again");
}

#[test]
fn unreadable_input_is_a_clear_error() {
    let output = kvinject(&["inject", "-f", "does/not/exist.yaml"], None);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does/not/exist.yaml"));
    let output = kvinject(&["inject", "-f", "-"], Some(b"a: [unclosed\n"));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("standard input: document 1"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_yaml_alias_bomb_is_refused_before_it_takes_the_memory() {
    // 14 KB that YAML aliases make into 4 million strings (within the parser's own limit on
    // alias replays, which counts replays, not what they hold).
    let items = vec!["x"; 2000].join(", ");
    let aliases = vec!["*a"; 2000].join(", ");
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: bomb}}\nitems: &a [{items}]\nmore: [{aliases}]\n"
    );
    let output = kvinject(&["inject", "-f", "-"], Some(text.as_bytes()));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("Error: standard input: document 1: ")
            && stderr.contains("the document expands to more than 64 MiB"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

/// The webhook's answer for every pod and pod template in the examples, applied, equals what
/// `inject` prints: one core, two adapters.
#[test]
fn inject_and_the_webhook_agree() {
    let settings = Settings::new(None, None, "kvinject");
    for example in EXAMPLES {
        let path = format!("examples/{example}.yaml");
        let input = manifest::parse(&std::fs::read(&path).unwrap(), Format::Yaml, &path).unwrap();
        let facts = DocumentFacts::from_documents(&input, "default");
        let injected =
            kvinject::offline::inject::inject(input.clone(), "default", &settings).unwrap();
        for (before, after) in input.iter().zip(&injected.documents) {
            let pointer = match before["kind"].as_str().unwrap() {
                "Pod" => "",
                "Deployment" => "/spec/template",
                "CronJob" => "/spec/jobTemplate/spec/template",
                _ => continue,
            };
            let namespace = before["metadata"]["namespace"].as_str().unwrap();
            let mut pod = before.pointer(pointer).unwrap().clone();
            pod["apiVersion"] = json!("v1");
            pod["kind"] = json!("Pod");
            let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": namespace,
                "operation": "CREATE", "userInfo": {}, "object": pod}});
            let answered =
                admission::review(review.to_string().as_bytes(), &facts, &settings).unwrap();
            let encoded: Value = serde_json::from_slice(&answered.encode()).unwrap();
            let mut patched = pod.clone();
            if let Some(patch) = encoded["response"].get("patch") {
                json_patch::patch(&mut patched, &base64_patch(patch)).unwrap();
            }
            let mut expected = after.pointer(pointer).unwrap().clone();
            expected["apiVersion"] = json!("v1");
            expected["kind"] = json!("Pod");
            assert_eq!(patched, expected, "{example}: {}", before["kind"]);
        }
    }
}

fn base64_patch(value: &Value) -> json_patch::Patch {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn certs_writes_the_key_0600_over_any_file_and_never_follows_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    std::fs::create_dir(&out).unwrap();
    // A world-readable key file from before, and a link planted where the CA goes.
    std::fs::write(out.join("tls.key"), "old").unwrap();
    std::fs::set_permissions(out.join("tls.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, out.join("ca.crt")).unwrap();
    let output = kvinject(&["certs", "--out", out.to_str().unwrap()], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = std::fs::metadata(out.join("tls.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let ca = std::fs::symlink_metadata(out.join("ca.crt")).unwrap();
    assert!(ca.file_type().is_file(), "the link was replaced by a file");
    assert!(
        std::fs::read_to_string(out.join("ca.crt"))
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
}

#[test]
fn certs_writes_a_ca_and_a_serving_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let output = kvinject(
        &[
            "certs",
            "--out",
            out.to_str().unwrap(),
            "--service",
            "hook",
            "--namespace",
            "infra",
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("hook.infra.svc.cluster.local"));
    for file in ["ca.crt", "tls.crt"] {
        assert!(
            std::fs::read_to_string(out.join(file))
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
    }
    assert!(
        std::fs::read_to_string(out.join("tls.key"))
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out.join("tls.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    kvinject::webhook::tls::server_config(&out.join("tls.crt"), &out.join("tls.key"))
        .expect("the pair loads");
}

/// `kvinject explain` on every example: a snapshot a reviewer reads, and the JSON for tools
/// agreeing with what `inject` writes.
#[test]
fn explain_says_what_and_why_for_every_example() {
    for example in EXAMPLES {
        let path = format!("examples/{example}.yaml");
        let text = stdout(&kvinject(&["explain", "-f", &path], None));
        insta::assert_snapshot!(format!("explain-{example}"), text);
        let reports: Value = serde_json::from_str(&stdout(&kvinject(
            &["explain", "-f", &path, "-o", "json"],
            None,
        )))
        .unwrap();
        let injected = manifest::parse(
            stdout(&kvinject(&["inject", "-f", &path], None)).as_bytes(),
            Format::Yaml,
            "out",
        )
        .unwrap();
        for report in reports.as_array().unwrap() {
            if report["outcome"] != "injected" {
                continue;
            }
            let document = report["document"].as_str().unwrap();
            let (kind, name) = document.split_once('/').unwrap();
            let after = injected
                .iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .unwrap();
            let template = if kind == "Pod" {
                after
            } else if kind == "CronJob" {
                &after["spec"]["jobTemplate"]["spec"]["template"]
            } else {
                &after["spec"]["template"]
            };
            let volumes: Vec<Value> = report["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| json!({"name": v["volume"], "spc": v["secretProviderClass"]}))
                .collect();
            let written: Vec<Value> = template["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| v.get("csi").is_some())
                .map(|v| json!({"name": v["name"], "spc": v["csi"]["volumeAttributes"]["secretProviderClass"]}))
                .collect();
            assert_eq!(volumes, written, "{example}: {document}");
        }
    }
}

#[test]
fn explain_gives_a_denial_its_message_and_exits_1() {
    let input = std::fs::read_to_string("examples/workload-identity.yaml")
        .unwrap()
        .replace("cert/checkout-tls", "blob/checkout-tls");
    let output = kvinject(
        &["explain", "-f", "-", "-o", "json"],
        Some(input.as_bytes()),
    );
    assert_eq!(output.status.code(), Some(1));
    let reports: Value = serde_json::from_slice(&output.stdout).unwrap();
    let denied = &reports[0];
    assert_eq!(denied["outcome"], "denied");
    assert!(
        denied["denial"]
            .as_str()
            .unwrap()
            .starts_with("kvinject: annotation kvinject.io/file.tls.crt: reference"),
        "{denied}"
    );
    let text = kvinject(&["explain", "-f", "-"], Some(input.as_bytes()));
    assert_eq!(text.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&text.stdout)
        .starts_with("Deployment/checkout in namespace shop: denied\n  why: kvinject: annotation kvinject.io/file.tls.crt"));
}

#[test]
fn completions_for_every_shell_know_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&kvinject(&["completions", shell], None));
        for command in ["inject", "explain", "serve", "certs", "completions"] {
            assert!(script.contains(command), "{shell}: {command}");
        }
    }
    let refused = kvinject(&["completions", "tcsh"], None);
    assert_eq!(refused.status.code(), Some(2));
}

/// Installed (or linked) as `kubectl-kvinject` on the PATH, kubectl runs it as `kubectl kvinject`.
#[test]
fn runs_as_a_kubectl_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("kubectl-kvinject");
    std::os::unix::fs::symlink(std::fs::canonicalize(BIN).unwrap(), &plugin).unwrap();
    let run = |args: &[&str]| {
        Command::new(&plugin)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let path = "examples/workload-identity.yaml";
    assert_eq!(
        stdout(&run(&["inject", "-f", path])),
        stdout(&kvinject(&["inject", "-f", path], None))
    );
    assert_eq!(
        stdout(&run(&["explain", "-f", path])),
        stdout(&kvinject(&["explain", "-f", path], None))
    );
    let help = stdout(&run(&["--help"]));
    assert!(
        help.contains("Usage: kubectl kvinject [OPTIONS] <COMMAND>"),
        "{help}"
    );
}
