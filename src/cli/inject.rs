//! `kvinject inject`: read manifests, run the offline adapter, print; optionally verify the
//! objects against Key Vault with the Azure CLI's login.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::CliError;
use crate::cli::args::InjectArgs;
use crate::core::plan::PodObjects;
use crate::keyvault::{Verifier, VerifierSettings, VerifyMode};
use crate::offline::{inject, manifest};

/// `kvinject inject`: prints the documents with their pods mutated, or the denials.
pub fn run_inject(args: InjectArgs) -> Result<ExitCode, CliError> {
    let InjectArgs {
        filename,
        namespace,
        output,
        core,
        verify,
    } = args;
    let (verify_mode, verifier_settings) = verify.settings();
    let verify_mode = verify_mode.unwrap_or(VerifyMode::Off);
    let input = manifest::read(&filename)?;
    let format = output.unwrap_or(input.format);
    let mut stderr = std::io::stderr().lock();
    match inject::inject(input.documents, &namespace, &core.settings()) {
        Ok(injected) => {
            for warning in &injected.warnings {
                let _ = writeln!(stderr, "Warning: {warning}");
            }
            if verify_mode != VerifyMode::Off {
                let refusals = verify_offline(
                    &injected.objects,
                    verify_mode,
                    verifier_settings,
                    &mut stderr,
                )?;
                if refusals > 0 {
                    return Ok(ExitCode::FAILURE);
                }
            }
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(manifest::write(&injected.documents, format).as_bytes())
                .map_err(|source| CliError::Io {
                    what: "writing standard output".into(),
                    source,
                })?;
            Ok(ExitCode::SUCCESS)
        }
        Err(denied) => {
            for denial in &denied.0 {
                let _ = writeln!(stderr, "Error: {denial}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Verifies every generate-mode pod's objects with the Azure CLI's login; prints a line per
/// problem and returns how many denials there were.
fn verify_offline(
    objects: &[(String, PodObjects)],
    mode: VerifyMode,
    settings: VerifierSettings,
    stderr: &mut impl Write,
) -> Result<usize, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::runtime)?;
    let verifier = Verifier::new(Verifier::cli_credential(), settings);
    Ok(runtime.block_on(report_verification(&verifier, objects, mode, stderr)))
}

/// What `inject --verify-objects` prints: `Error:` for an unusable object in `deny` mode,
/// `Warning:` otherwise; returns the number of errors.
pub async fn report_verification(
    verifier: &Verifier,
    objects: &[(String, PodObjects)],
    mode: VerifyMode,
    out: &mut impl Write,
) -> usize {
    let mut refusals = 0;
    for (label, objects) in objects {
        for (_, report) in verifier.verify(&objects.vault, &objects.references).await {
            let Some(report) = report else { continue };
            if report.about_object && mode == VerifyMode::Deny {
                refusals += 1;
                let _ = writeln!(out, "Error: {label}: {}", report.denial.message());
            } else {
                let _ = writeln!(out, "Warning: {label}: {}", report.denial.message());
            }
        }
    }
    refusals
}
