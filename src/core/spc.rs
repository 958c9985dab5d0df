//! The SecretProviderClass kvinject generates (`docs/contract.md` section 4, generate mode).
//!
//! Content-addressed: the name is `kvinject-` + the first 20 hex chars (80 bits) of SHA-256 over
//! the canonical spec, so the same annotations always give the same SPC and rollouts never race
//! on one mutable object. 80 bits put a second preimage (another spec with the same name) out of
//! reach; 40 bits, as before, were minutes on one GPU. Pure: nothing is written from here.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::core::annotations::{
    GENERATED_NAME_PREFIX, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SPC_API_VERSION, TLS_SECRET_TYPE,
};
use crate::core::held::Held;
use crate::core::identity::PodIdentity;
use crate::core::json;
use crate::core::reference::ObjectRef;

/// Hex characters of the spec's SHA-256 in a generated name: 80 bits.
pub const NAME_HASH_HEX: usize = 20;

/// One env var synced from a mounted object into the Secret named like the SPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedVar {
    /// The mounted file (alias) the provider syncs from.
    pub alias: String,
    /// The env var name, also the Secret key.
    pub var: String,
}

/// One `kubernetes.io/tls` Secret synced from a mounted certificate's backing secret: the
/// provider splits the file into the private key (`tls.key`) and the chain (`tls.crt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSync {
    /// The mounted file (alias) holding the key and the chain.
    pub alias: String,
    /// The Secret's name.
    pub secret: String,
}

/// What a generated SPC holds, before it is named.
#[derive(Debug, Clone)]
pub struct SpcContent<'a> {
    /// Key Vault name.
    pub vault: &'a str,
    /// Tenant GUID.
    pub tenant_id: &'a str,
    /// The identity the provider authenticates with.
    pub identity: &'a PodIdentity,
    /// Mounted files by alias (sorted: the map's order is the `objects` order).
    pub files: &'a BTreeMap<String, ObjectRef>,
    /// Env vars synced into the Secret, sorted by var.
    pub synced: &'a [SyncedVar],
    /// TLS Secrets synced, sorted by Secret name.
    pub tls: &'a [TlsSync],
}

/// A generated SecretProviderClass, named: what admission needs (the name) at once, the
/// manifest only when it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedSpc {
    /// `kvinject-<h>`; also the name of the synced Secret.
    pub name: String,
    /// The namespace it is for.
    namespace: String,
    /// The canonical spec's compact JSON, with the Opaque Secret's name left empty: what the
    /// name hashes.
    canonical: String,
}

impl GeneratedSpc {
    /// The full manifest.
    pub fn manifest(&self) -> Value {
        // The text is this module's own JSON: it always parses.
        let mut spec: Value = serde_json::from_str(&self.canonical).unwrap_or(Value::Null);
        if let Some(secret) = spec.pointer_mut("/secretObjects/0")
            && secret["type"] == "Opaque"
        {
            secret["secretName"] = Value::String(self.name.clone());
        }
        json!({
            "apiVersion": SPC_API_VERSION,
            "kind": "SecretProviderClass",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": { MANAGED_BY_LABEL: MANAGED_BY_VALUE },
            },
            "spec": spec,
        })
    }
}

impl Held for GeneratedSpc {
    fn heap(&self) -> usize {
        self.name.heap() + self.namespace.heap() + self.canonical.heap()
    }
}

/// Builds the SPC for `content` in `namespace`.
pub fn generate(namespace: &str, content: &SpcContent<'_>) -> GeneratedSpc {
    let canonical = canonical_spec(content);
    let digest = Sha256::digest(canonical.as_bytes());
    let mut name = String::with_capacity(GENERATED_NAME_PREFIX.len() + NAME_HASH_HEX);
    name.push_str(GENERATED_NAME_PREFIX);
    name.push_str(&hex(&digest[..NAME_HASH_HEX / 2]));
    GeneratedSpc {
        name,
        namespace: namespace.to_owned(),
        canonical,
    }
}

/// The compact JSON of the spec whose SHA-256 names the SPC, written directly (keys in this
/// order, strings escaped as serde_json escapes them); the Opaque Secret's name (which is the
/// hash) is left empty. Its entry comes first, then one entry per TLS Secret; a spec without TLS
/// Secrets is exactly what kvinject generated before they existed, so those names did not change.
fn canonical_spec(content: &SpcContent<'_>) -> String {
    let mut out = String::with_capacity(256 + 96 * (content.files.len() + content.synced.len()));
    out.push_str(r#"{"provider":"azure","parameters":{"keyvaultName":"#);
    json::push_string(&mut out, content.vault);
    out.push_str(r#","tenantId":"#);
    json::push_string(&mut out, content.tenant_id);
    match content.identity {
        PodIdentity::AadPodIdentity { .. } => out.push_str(r#","usePodIdentity":"true""#),
        PodIdentity::WorkloadIdentity { client_id, .. } => {
            out.push_str(r#","clientID":"#);
            json::push_string(&mut out, client_id);
        }
    }
    out.push_str(r#","objects":"#);
    json::push_string(&mut out, &objects_parameter(content.files));
    out.push('}');
    let mut entries = 0;
    let mut entry = |out: &mut String| {
        out.push_str(if entries == 0 {
            r#","secretObjects":["#
        } else {
            ","
        });
        entries += 1;
    };
    if !content.synced.is_empty() {
        entry(&mut out);
        out.push_str(r#"{"secretName":"","type":"Opaque","data":"#);
        json::push_array(&mut out, content.synced, |out, synced| {
            push_data(out, &synced.alias, &synced.var);
        });
        out.push('}');
    }
    for tls in content.tls {
        entry(&mut out);
        out.push_str(r#"{"secretName":"#);
        json::push_string(&mut out, &tls.secret);
        out.push_str(r#","type":"#);
        json::push_string(&mut out, TLS_SECRET_TYPE);
        out.push_str(r#","data":["#);
        push_data(&mut out, &tls.alias, "tls.key");
        out.push(',');
        push_data(&mut out, &tls.alias, "tls.crt");
        out.push_str("]}");
    }
    if entries > 0 {
        out.push(']');
    }
    out.push('}');
    out
}

/// `{"objectName":<alias>,"key":<key>}`.
fn push_data(out: &mut String, alias: &str, key: &str) {
    out.push_str(r#"{"objectName":"#);
    json::push_string(out, alias);
    out.push_str(r#","key":"#);
    json::push_string(out, key);
    out.push('}');
}

/// The provider's `objects` parameter: YAML `array:` of YAML strings, one per file, by alias.
/// Values are written as double-quoted scalars (JSON strings are valid YAML), so no name can be
/// read back as a number, boolean or null.
pub fn objects_parameter(files: &BTreeMap<String, ObjectRef>) -> String {
    let mut out = String::from("array:\n");
    for (alias, object) in files {
        let mut fields: Vec<(&str, &str)> = vec![
            ("objectName", &object.name),
            ("objectType", object.object_type.as_str()),
        ];
        if let Some(version) = &object.version {
            fields.push(("objectVersion", version));
        }
        fields.push(("objectAlias", alias));
        if let Some(format) = object.format {
            fields.push(("objectFormat", format.as_str()));
        }
        if let Some(encoding) = object.encoding {
            fields.push(("objectEncoding", encoding.as_str()));
        }
        if let Some(mode) = &object.mode {
            fields.push(("filePermission", mode));
        }
        out.push_str("  - |\n");
        for (key, value) in fields {
            out.push_str("    ");
            out.push_str(key);
            out.push_str(": ");
            json::push_string(&mut out, value);
            out.push('\n');
        }
    }
    out
}

/// Lowercase hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

/// SHA-256 of a spec's canonical JSON (object keys sorted at every level): equal for equal
/// values whatever their key order, so a cache can keep the digest of an SPC's spec instead of
/// the spec to tell drift.
pub fn spec_digest(spec: &Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    canonical(spec, &mut hasher);
    hasher.finalize().into()
}

fn canonical(value: &Value, hasher: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                hasher.update(Value::from(key.as_str()).to_string().as_bytes());
                hasher.update(b":");
                canonical(&map[key], hasher);
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                canonical(item, hasher);
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> BTreeMap<String, ObjectRef> {
        entries
            .iter()
            .map(|(alias, reference)| (alias.to_string(), ObjectRef::parse(reference).unwrap()))
            .collect()
    }

    #[test]
    fn hex_is_two_lowercase_digits_per_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
        let every_byte: Vec<u8> = (0..=255).collect();
        let expected: String = every_byte.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&every_byte), expected);
    }

    #[test]
    fn objects_are_sorted_by_alias_and_quoted() {
        let rendered = objects_parameter(&files(&[
            ("true", "db"),
            (
                "0440",
                "cert/tls@0123456789abcdef0123456789abcdef?format=pem&mode=0400",
            ),
        ]));
        assert_eq!(
            rendered,
            "array:\n  - |\n    objectName: \"tls\"\n    objectType: \"cert\"\n    objectVersion: \
             \"0123456789abcdef0123456789abcdef\"\n    objectAlias: \"0440\"\n    objectFormat: \"pem\"\n    \
             filePermission: \"0400\"\n  - |\n    objectName: \"db\"\n    objectType: \"secret\"\n    \
             objectAlias: \"true\"\n"
        );
    }

    #[test]
    fn the_spec_digest_ignores_key_order_and_sees_any_change() {
        let a = serde_json::json!({"provider": "azure", "parameters": {"a": "1", "b": ["x", {"c": 2}]}});
        let reordered: Value = serde_json::from_str(
            r#"{"parameters": {"b": ["x", {"c": 2}], "a": "1"}, "provider": "azure"}"#,
        )
        .unwrap();
        assert_eq!(spec_digest(&a), spec_digest(&reordered));
        for changed in [
            serde_json::json!({"provider": "azure", "parameters": {"a": "1", "b": ["x", {"c": 3}]}}),
            serde_json::json!({"provider": "azure", "parameters": {"a": "1", "b": [{"c": 2}, "x"]}}),
            serde_json::json!({"provider": "azure", "parameters": {"a": 1, "b": ["x", {"c": 2}]}}),
            serde_json::json!({"provider": "azure", "parameters": {"a": "1", "b": ["x", {"c": 2}], "d": null}}),
        ] {
            assert_ne!(spec_digest(&a), spec_digest(&changed), "{changed}");
        }
    }

    #[test]
    fn same_content_same_name_any_change_new_name() {
        let identity = PodIdentity::WorkloadIdentity {
            client_id: "11111111-1111-1111-1111-111111111111".into(),
            service_account: "api".into(),
        };
        let f = files(&[("DB", "db")]);
        let synced = [SyncedVar {
            alias: "DB".into(),
            var: "DB".into(),
        }];
        let content = SpcContent {
            vault: "kv",
            tenant_id: "t",
            identity: &identity,
            files: &f,
            synced: &synced,
            tls: &[],
        };
        let a = generate("ns1", &content);
        let b = generate("ns2", &content);
        assert_eq!(a.name, b.name, "the namespace is not part of the content");
        assert!(
            a.name.starts_with("kvinject-") && a.name.len() == "kvinject-".len() + NAME_HASH_HEX
        );
        assert_eq!(
            a.manifest()["spec"]["secretObjects"][0]["secretName"],
            a.name.as_str()
        );
        let other_vault = generate(
            "ns1",
            &SpcContent {
                vault: "kv2",
                ..content.clone()
            },
        );
        let no_sync = generate(
            "ns1",
            &SpcContent {
                synced: &[],
                ..content
            },
        );
        assert_ne!(a.name, other_vault.name);
        assert_ne!(a.name, no_sync.name);
        assert!(no_sync.manifest()["spec"].get("secretObjects").is_none());
    }

    #[test]
    fn the_canonical_text_is_serde_json_s_compact_json_of_the_spec() {
        // The name hashes this text: it must stay byte for byte what serializing the spec as a
        // serde_json value gives, whatever the strings hold.
        let awkward = "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i\u{1f}j\u{7f}k é 名 /";
        let identities = [
            PodIdentity::WorkloadIdentity {
                client_id: awkward.into(),
                service_account: "api".into(),
            },
            PodIdentity::AadPodIdentity {
                selector: "sel".into(),
            },
        ];
        let f = files(&[(awkward, "db"), ("plain", "cert/x")]);
        let synced = [
            SyncedVar {
                alias: awkward.into(),
                var: "DB".into(),
            },
            SyncedVar {
                alias: "plain".into(),
                var: "B".into(),
            },
        ];
        let tls = [TlsSync {
            alias: "cert.pem".into(),
            secret: awkward.into(),
        }];
        for identity in &identities {
            for (synced, tls) in [
                (&synced[..], &tls[..]),
                (&[][..], &tls[..]),
                (&synced[..], &[][..]),
                (&[][..], &[][..]),
            ] {
                let content = SpcContent {
                    vault: awkward,
                    tenant_id: "t",
                    identity,
                    files: &f,
                    synced,
                    tls,
                };
                let text = canonical_spec(&content);
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value.to_string(), text);
                assert_eq!(value["parameters"]["keyvaultName"], awkward);
                let mut parameters = serde_json::Map::new();
                parameters.insert("keyvaultName".into(), awkward.into());
                parameters.insert("tenantId".into(), "t".into());
                match identity {
                    PodIdentity::AadPodIdentity { .. } => {
                        parameters.insert("usePodIdentity".into(), "true".into());
                    }
                    PodIdentity::WorkloadIdentity { client_id, .. } => {
                        parameters.insert("clientID".into(), client_id.as_str().into());
                    }
                }
                parameters.insert("objects".into(), objects_parameter(&f).into());
                let mut expected = json!({ "provider": "azure", "parameters": parameters });
                let mut secret_objects = Vec::new();
                if !synced.is_empty() {
                    let data: Vec<Value> = synced
                        .iter()
                        .map(|s| json!({ "objectName": s.alias, "key": s.var }))
                        .collect();
                    secret_objects
                        .push(json!({ "secretName": "", "type": "Opaque", "data": data }));
                }
                for t in tls {
                    secret_objects.push(json!({"secretName": t.secret, "type": TLS_SECRET_TYPE,
                        "data": [{ "objectName": t.alias, "key": "tls.key" },
                                 { "objectName": t.alias, "key": "tls.crt" }]}));
                }
                if !secret_objects.is_empty() {
                    expected["secretObjects"] = Value::Array(secret_objects);
                }
                assert_eq!(text, expected.to_string());
            }
        }
    }
}
