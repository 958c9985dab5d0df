//! Micro-benchmarks of the pure core and the admission adapter, per AdmissionReview shape
//! (`bench/bodies.rs`, the same bodies the load run sends). Each is measured through `decode`,
//! `plan_pod`, `answer`, `review` (decode + core + response) and `encode`. See
//! `docs/performance.md`.

#![allow(clippy::print_stdout)] // the benchmark reports the bodies it measures

#[path = "../bench/bodies.rs"]
mod bodies;

use std::hint::black_box;
use std::time::Duration;

use bodies::{CASES, Case, review_body};
use criterion::{BenchmarkId, Criterion, Throughput};
use kvinject::core::facts::DocumentFacts;
use kvinject::core::plan::{self, Settings};
use kvinject::offline::manifest;
use kvinject::webhook::admission::{self, Route};

/// The facts the pods run under: `tests/fixtures/facts.yaml`.
fn facts() -> DocumentFacts {
    let facts = manifest::read("tests/fixtures/facts.yaml").expect("tests/fixtures/facts.yaml");
    DocumentFacts::from_documents(&facts.documents, "default")
}

fn main() {
    let facts = facts();
    let settings = Settings::new(None, None, "kvinject");
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let bodies: Vec<(&Case, Vec<u8>)> = CASES.iter().map(|c| (c, review_body(c))).collect();
    for (case, body) in &bodies {
        let answer = admission::review(body, &facts, &settings).expect("a valid review");
        // Benchmark the intended path: labelled pods are patched, the other is left alone.
        assert_eq!(answer.denial_message(), None, "{}: denied", case.name);
        let patched = answer.outcome == admission::Outcome::Patched;
        assert_eq!(patched, case.labelled, "{}", case.name);
        println!(
            "{}: {} containers, AdmissionReview {} bytes, response {} bytes",
            case.name,
            case.containers,
            body.len(),
            answer.encode().len()
        );
    }

    let mut group = criterion.benchmark_group("admission");
    for (case, body) in &bodies {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let id = |what| BenchmarkId::new(what, case.name);
        group.bench_function(id("review"), |b| {
            b.iter(|| admission::review(black_box(body), &facts, &settings))
        });
        group.bench_function(id("decode"), |b| {
            b.iter(|| admission::decode(black_box(body)))
        });
        let decoded = admission::decode(body).expect("a valid review");
        let pod = decoded.object().cloned().expect("a pod");
        group.bench_function(id("plan_pod"), |b| {
            b.iter(|| plan::plan_pod(black_box(&pod), "shop", &facts, &settings))
        });
        group.bench_function(id("answer"), |b| {
            b.iter(|| admission::answer(Route::Mutate, black_box(&decoded), &facts, &settings))
        });
        let answer = admission::review(body, &facts, &settings).expect("a valid review");
        group.bench_function(id("encode"), |b| b.iter(|| black_box(&answer).encode()));
    }
    group.finish();
    criterion.final_summary();
}
