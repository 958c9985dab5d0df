//! Writes the load run's AdmissionReview bodies (`bench/bodies.rs`) as `<DIR>/<case>.json`.
//!
//! usage: cargo run --release --example bench-bodies -- DIR

#[path = "bodies.rs"]
mod bodies;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: bench-bodies DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    for case in &bodies::CASES {
        let path = dir.join(format!("{}.json", case.name));
        if let Err(error) = std::fs::write(&path, bodies::review_body(case)) {
            eprintln!("bench-bodies: writing {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
