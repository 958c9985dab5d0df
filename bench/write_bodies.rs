//! Writes the load run's AdmissionReview bodies (`bench/bodies.rs`) as `<DIR>/<case>.json`, and
//! `<DIR>/facts.yaml`: the facts of `tests/fixtures/facts.yaml` as a cluster has them once those
//! pods were admitted, with the SecretProviderClasses `kvinject inject` writes for them (without
//! them, `serve --facts` answers each pod with a warning that its SPC is missing, which a server
//! in a cluster, having written it, never gives).
//!
//! usage: cargo run --release --example bench-bodies -- DIR

#[path = "bodies.rs"]
mod bodies;

use std::path::PathBuf;
use std::process::ExitCode;

use kvinject::core::plan::Settings;
use kvinject::offline::inject::inject;
use kvinject::offline::manifest::{self, Format};
use serde_json::Value;

const FACTS: &str = include_str!("../tests/fixtures/facts.yaml");

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: bench-bodies DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let mut pods = Vec::new();
    for case in &bodies::CASES {
        let path = dir.join(format!("{}.json", case.name));
        let body = bodies::review_body(case);
        if let Err(error) = std::fs::write(&path, &body) {
            eprintln!("bench-bodies: writing {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        let review: Value = serde_json::from_slice(&body).expect("a body is JSON");
        pods.push(review["request"]["object"].clone());
    }
    let path = dir.join("facts.yaml");
    if let Err(error) = facts(pods).and_then(|facts| {
        std::fs::write(&path, facts).map_err(|e| format!("writing {}: {e}", path.display()))
    }) {
        eprintln!("bench-bodies: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The fixture's facts and the SPCs `pods` need.
fn facts(pods: Vec<Value>) -> Result<String, String> {
    let mut documents =
        manifest::parse(FACTS.as_bytes(), Format::Yaml, "facts.yaml").map_err(|e| e.to_string())?;
    let given = documents.len() + pods.len();
    documents.extend(pods);
    let settings = Settings::new(None, None, "kvinject");
    let injected = inject(documents, "default", &settings).map_err(|e| e.to_string())?;
    // After the documents given come the SPCs they lacked.
    let spcs = injected.documents.get(given..).unwrap_or_default();
    if spcs.is_empty() {
        return Err("the benchmarked pods need no SPC".into());
    }
    Ok(format!(
        "{FACTS}---\n{}",
        manifest::write(spcs, Format::Yaml)
    ))
}
