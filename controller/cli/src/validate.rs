//! `serin validate`: check Canary, MetricTemplate and AlertProvider manifests with the rules the
//! controller uses, before they reach a cluster.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Check manifests (several YAML or JSON documents per file). Prints one line per document,
/// `FILE: document N (Kind ns/name): valid`, or one line per error,
/// `FILE: document N (Kind ns/name): field.path: message`. The local platform's `Process`
/// documents are checked too; documents of other API groups (Deployments, Services, ...) are
/// skipped. Exit status: 0 all valid, 1 invalid documents,
/// 2 a file could not be read or held no Serin resource.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// File or directory to check (`-` reads stdin); repeat for several. Directories are
    /// searched for *.yaml, *.yml and *.json files, not recursively.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<String>,

    /// Print only errors.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Exit status when a manifest is invalid.
const INVALID: i32 = 1;
/// Exit status when an input cannot be read.
const UNREADABLE: i32 = 2;

/// Checks every file and reports; exits with [`INVALID`] or [`UNREADABLE`] on failure.
pub fn run(args: Args) -> anyhow::Result<()> {
    let code = check(&args);
    if code != 0 {
        // The report is the error message; exit without anyhow's "Error:" wrapper.
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    Ok(())
}

fn check(args: &Args) -> i32 {
    let sources = match read_sources(&args.files) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("serin validate: {message}");
            return UNREADABLE;
        }
    };
    let (mut checked, mut invalid) = (0usize, 0usize);
    for (source, text) in &sources {
        // The local platform's `Process` is checked by the local controller's own reader, so
        // `serin validate` and `serin controller --local` agree.
        let local_kinds = |kind: &str, value: &_| {
            (kind == "Process").then(|| {
                serin_controller::local::manifest::parse_process(Clone::clone(value), "")
                    .map(|_| ())
                    .map_err(|errors| {
                        errors
                            .into_iter()
                            .map(|e| serin_api::ValidationError::new(e.path, e.message))
                            .collect()
                    })
            })
        };
        for doc in serin_api::check_manifests_with(text, &local_kinds) {
            for line in doc.report_lines(source) {
                if doc.is_error() {
                    eprintln!("{line}");
                } else if !args.quiet {
                    println!("{line}");
                }
            }
            if !matches!(doc.outcome, serin_api::Outcome::Skipped) {
                checked += 1;
            }
            if doc.is_error() {
                invalid += 1;
            }
        }
    }
    if checked == 0 {
        eprintln!(
            "serin validate: no Canary, MetricTemplate or AlertProvider found in {}",
            args.files.join(", ")
        );
        return UNREADABLE;
    }
    if invalid > 0 {
        eprintln!("serin validate: {invalid} of {checked} documents are invalid");
        return INVALID;
    }
    0
}

pub(crate) fn read_sources(files: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut sources = Vec::new();
    for file in files {
        if file == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            sources.push(("<stdin>".to_string(), text));
            continue;
        }
        let path = Path::new(file);
        let paths = if path.is_dir() {
            manifest_files(path)?
        } else {
            vec![path.to_path_buf()]
        };
        for p in paths {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            sources.push((p.display().to_string(), text));
        }
    }
    Ok(sources)
}

fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files)
}
