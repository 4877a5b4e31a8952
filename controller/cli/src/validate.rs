//! `serin validate`: check Canary, MetricTemplate and AlertProvider manifests with the rules the
//! controller uses, before they reach a cluster.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Check manifests (several YAML or JSON documents per file). Prints per document
/// `FILE: document N (Kind ns/name): valid and runnable`, or
/// `FILE: document N (Kind ns/name): valid for Flagger, not runnable by this Serin: <why>; supported: ...`
/// (a traffic provider, target kind or metric provider this Serin does not run), or one line
/// per error `FILE: document N (Kind ns/name): field.path: message`; warnings (what Serin reads
/// differently from what was written, e.g. an interval rounded up) follow as
/// `...: warning: field.path: message`, and fields Serin accepts but does not act on as
/// `...: ignored: field.path: why` (both left out by `--quiet`) — among them a Secret that a MetricTemplate,
/// AlertProvider or webhook names and that is not among the documents given (the local
/// platform reads Secrets only from `kind: Secret` documents). The local platform's `Process` documents are checked
/// too; documents of other API groups (Deployments, Services, ...) are skipped. With `--rps`,
/// each valid Canary with the judge is followed by `serin plan`'s lines for that traffic
/// (`...: plan at N rps:`, `...: plan: <line>`), or `...: plan: none: <why>`.
/// Exit status: 0 all valid and runnable, 1 invalid documents, 2 a file could not be read or
/// held no Serin resource, 3 all valid but some not runnable by this Serin.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// File or directory to check (`-` reads stdin); repeat for several. Directories are
    /// searched for *.yaml, *.yml and *.json files (recursively with --flagger).
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<String>,

    /// Print only errors (and documents that are not runnable).
    #[arg(short, long)]
    pub quiet: bool,

    /// Migration report for Flagger manifests: read `flagger.app/v1beta1` documents as if
    /// their apiVersion were already `serin.dev/v1beta1`, and print each document's verdict,
    /// the fields Serin accepts but ignores, and the counts.
    #[arg(long)]
    pub flagger: bool,

    /// Also print, for every valid Canary with the judge, `serin plan`'s figures at this total
    /// requests per second: the expected time to a Pass for a healthy canary and to a Fail for
    /// a doubled error rate, or that the run can never prove anything.
    #[arg(long, value_name = "RPS", allow_negative_numbers = true)]
    pub rps: Option<f64>,

    /// The primary's error rate the plan assumes, in percent (`1%` or `1`; with --rps).
    #[arg(
        long,
        default_value = "1%",
        value_name = "PERCENT",
        requires = "rps",
        allow_hyphen_values = true
    )]
    pub error_rate: String,
}

/// Simulated rollouts per plan line in `serin validate --rps` (`serin plan --trials` for more).
const PLAN_TRIALS: usize = 200;

/// Exit status when a manifest is invalid.
const INVALID: i32 = 1;
/// Exit status when an input cannot be read.
const UNREADABLE: i32 = 2;
/// Exit status when every manifest is valid but some are not runnable by this Serin.
const NOT_RUNNABLE: i32 = 3;

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
    let plan_at = match plan_traffic(args) {
        Ok(p) => p,
        Err(m) => {
            eprintln!("serin validate: {m}");
            return UNREADABLE;
        }
    };
    let sources = match read_sources(&args.files, args.flagger) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("serin validate: {message}");
            return UNREADABLE;
        }
    };
    let (mut checked, mut invalid, mut not_runnable, mut with_ignored) =
        (0usize, 0usize, 0usize, 0usize);
    if args.flagger {
        println!("Flagger migration report for {}", args.files.join(", "));
    }
    // Every document first, so a Canary's verdict can see MetricTemplates in other files.
    let (mut docs, mut doc_sources) = (Vec::new(), Vec::new());
    for (source, text) in &sources {
        // The local platform's `Process` is checked by the local controller's own reader, so
        // `serin validate` and `serin controller --local` agree.
        let local_kinds = |kind: &str, value: &_| {
            (kind == "Process").then(|| {
                serin_local::manifest::parse_process(Clone::clone(value), "")
                    .map(|_| ())
                    .map_err(|errors| {
                        errors
                            .into_iter()
                            .map(|e| serin_api::ValidationError::new(e.path, e.message))
                            .collect()
                    })
            })
        };
        let found = if args.flagger {
            serin_api::check_flagger_manifests(text)
        } else {
            serin_api::check_manifests_with(text, &local_kinds)
        };
        doc_sources.extend(std::iter::repeat_n(source.as_str(), found.len()));
        docs.extend(found);
    }
    serin_api::apply_template_verdicts(&mut docs);
    check_template_queries(&mut docs);
    if !args.flagger {
        // A migration report reads Flagger's manifests, whose Secrets live in the cluster.
        serin_api::apply_secret_checks(&mut docs);
    }
    for (doc, source) in docs.iter().zip(doc_sources) {
        for line in doc.report_lines(source) {
            if doc.is_error() || doc.is_not_runnable() {
                eprintln!("{line}");
            } else if !args.quiet {
                println!("{line}");
            }
        }
        // Fields Serin keeps but does not act on are said for every Canary, not only in the
        // migration report: a Serin user who sets `service.retries` must not lose it silently.
        if let serin_api::Outcome::Valid(serin_api::Resource::Canary(c)) = &doc.outcome
            && (args.flagger || !args.quiet)
        {
            let provider = c
                .spec
                .provider
                .as_deref()
                .unwrap_or(serin_api::support::DEFAULT_PROVIDER);
            let ignored = serin_api::support::ignored_fields(c, provider);
            if !ignored.is_empty() {
                with_ignored += 1;
            }
            for (field, why) in ignored {
                println!(
                    "{source}: document {} ({}): ignored: {field}: {why}",
                    doc.index,
                    doc.label()
                );
            }
        }
        if let (Some((rps, error_rate)), serin_api::Outcome::Valid(serin_api::Resource::Canary(c))) =
            (plan_at, &doc.outcome)
            && !args.quiet
            && !doc.is_not_runnable()
        {
            let prefix = format!("{source}: document {} ({})", doc.index, doc.label());
            for line in plan_lines(c, rps, error_rate) {
                println!("{prefix}: {line}");
            }
        }
        if !matches!(doc.outcome, serin_api::Outcome::Skipped) {
            checked += 1;
        }
        if doc.is_error() {
            invalid += 1;
        }
        if doc.is_not_runnable() {
            not_runnable += 1;
        }
    }
    if checked == 0 {
        eprintln!(
            "serin validate: no Canary, MetricTemplate or AlertProvider found in {}",
            args.files.join(", ")
        );
        return UNREADABLE;
    }
    if args.flagger {
        println!(
            "{checked} documents: {} valid and runnable, {not_runnable} valid for Flagger but not runnable by this Serin, {invalid} invalid; {with_ignored} Canaries set fields Serin accepts and ignores",
            checked - not_runnable - invalid
        );
        if invalid == 0 && not_runnable < checked {
            println!(
                "To migrate the runnable documents, change apiVersion flagger.app/v1beta1 to serin.dev/v1beta1."
            );
        }
    }
    if invalid > 0 {
        eprintln!("serin validate: {invalid} of {checked} documents are invalid");
        return INVALID;
    }
    if not_runnable > 0 {
        eprintln!(
            "serin validate: {not_runnable} of {checked} documents are valid for Flagger but not runnable by this Serin"
        );
        return NOT_RUNNABLE;
    }
    0
}

/// Checks the queries whose shape Serin knows before they run: every template expression must
/// be one of Flagger's variables, and a CloudWatch query must be a
/// JSON array of `MetricDataQuery` objects (a misspelt key would otherwise only show at the first
/// analysis). Template expressions (`{{ target }}`, ...) stand for `0`, which keeps a valid
/// template valid JSON whether an expression sits inside a string or in place of a number.
fn check_template_queries(docs: &mut [serin_api::Document]) {
    for doc in docs {
        let serin_api::Outcome::Valid(serin_api::Resource::MetricTemplate(t)) = &doc.outcome else {
            continue;
        };
        // A query that can never render (an unknown `{{ name }}`, an unclosed `{{`) would
        // otherwise only show at the first analysis, holding the canary there.
        if let Err(e) = serin_analysis::check_template(&t.spec.query) {
            doc.outcome = serin_api::Outcome::Invalid(vec![serin_api::ValidationError::new(
                "spec.query",
                e.to_string(),
            )]);
            continue;
        }
        if t.spec.provider.type_ != "cloudwatch" {
            continue;
        }
        if let Err(message) =
            serin_analysis::cloudwatch::parse_query(&without_expressions(&t.spec.query))
        {
            doc.outcome = serin_api::Outcome::Invalid(vec![serin_api::ValidationError::new(
                "spec.query",
                message,
            )]);
        }
    }
}

/// `text` with every `{{ ... }}` replaced by `0`.
fn without_expressions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push('0');
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `--rps` and `--error-rate`, checked.
fn plan_traffic(args: &Args) -> Result<Option<(f64, f64)>, String> {
    let Some(rps) = args.rps else {
        return Ok(None);
    };
    crate::plan::check_rps("--rps", rps)?;
    let error_rate = crate::plan::parse_percent(&args.error_rate)?;
    Ok(Some((rps, error_rate)))
}

/// The planner's lines for one valid Canary (`plan at N rps: ...`), or why there is none.
fn plan_lines(c: &serin_api::Canary, rps: f64, error_rate: f64) -> Vec<String> {
    let figures = serin_api::Normalized::from_canary(c)
        .map_err(|errors| {
            errors
                .into_iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .and_then(|n| crate::plan::figures(&n, rps, error_rate, PLAN_TRIALS));
    match figures {
        Ok(text) => std::iter::once(format!("plan at {rps} rps:"))
            .chain(text.lines().map(|l| format!("plan: {}", l.trim_start())))
            .collect(),
        Err(why) => vec![format!("plan: none: {why}")],
    }
}

pub(crate) fn read_sources(
    files: &[String],
    recursive: bool,
) -> Result<Vec<(String, String)>, String> {
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
            manifest_files(path, recursive)?
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

fn manifest_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            if recursive {
                files.extend(manifest_files(&p, true)?);
            }
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(p);
        }
    }
    Ok(files)
}
