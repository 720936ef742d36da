//! `attestgate audit` and `attestgate audit summary` (SPEC §7): the decision
//! records (§6) of the audit log and its rotated files, filtered, listed or
//! counted.

mod files;
mod glob;
mod query;
mod record;
mod summary;
mod table;

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::Outcome;
use query::{DecisionFilter, Filters, Query, TimeSpec, Verdict};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    options: Options,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Count the matching decisions by decision and reason, namespace and image.
    Summary,
}

/// Global so that they may follow `summary` as well as precede it.
#[derive(clap::Args)]
struct Options {
    /// The audit log; the files logrotate rotated it into beside it are read too.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/var/log/attestgate/audit.jsonl"
    )]
    log: PathBuf,
    /// Decisions from this long ago (30s, 5m, 1h, 7d) or this RFC 3339 time on.
    #[arg(long, global = true, value_name = "DUR|TIME", value_parser = TimeSpec::parse)]
    since: Option<TimeSpec>,
    /// Decisions before this long ago or this RFC 3339 time.
    #[arg(long, global = true, value_name = "DUR|TIME", value_parser = TimeSpec::parse)]
    until: Option<TimeSpec>,
    /// Allowed or denied decisions only.
    #[arg(long, global = true, ignore_case = true)]
    decision: Option<DecisionFilter>,
    /// A reason of SPEC §6, such as MISSING_ATTESTATIONS (any case).
    #[arg(long, global = true, value_name = "R", value_parser = query::parse_reason)]
    reason: Option<&'static str>,
    /// PullImage, CreateContainer, TaskCreate, Evaluate or ContinuousValidation (any case).
    #[arg(long, global = true, value_name = "OP", value_parser = query::parse_operation)]
    operation: Option<&'static str>,
    /// The pod's namespace, exactly.
    #[arg(long, global = true, value_name = "NS")]
    namespace: Option<String>,
    /// The image as asked for, its repository or REPOSITORY@DIGEST: `*` any
    /// characters but `/`, `**` any characters, `?` one character.
    #[arg(long, global = true, value_name = "PATTERN")]
    image: Option<String>,
    /// How matching records, or the summary, are printed.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Aligned columns for people.
    Table,
    /// The matching records as they are in the log, one per line (`audit`),
    /// or one JSON object (`audit summary`).
    Json,
}

pub fn run(args: Args) -> Result<Outcome> {
    let options = args.options;
    let filters = Filters {
        since: options.since,
        until: options.until,
        decision: options.decision,
        reason: options.reason,
        operation: options.operation,
        namespace: options.namespace,
        image: options.image,
    };
    let query = Query::new(&filters, time::OffsetDateTime::now_utc())?;
    let files = files::log_files(&options.log)?;
    let stdout = io::stdout().lock();
    let mut out = io::BufWriter::with_capacity(1 << 16, stdout);
    let scanned = match args.command {
        None => match options.output {
            Format::Json => scan(&files, &query, |line, _| {
                out.write_all(line)?;
                out.write_all(b"\n")
            }),
            Format::Table => {
                let mut table = table::Table::new();
                let scanned = scan(&files, &query, |_, record| table.add(&record, &mut out));
                scanned.and_then(|scanned| {
                    table.finish(&mut out)?;
                    Ok(scanned)
                })
            }
        },
        Some(Command::Summary) => {
            let mut summary = summary::Summary::default();
            let scanned = scan(&files, &query, |_, record| {
                summary.add(&record);
                Ok(())
            });
            scanned.and_then(|scanned| {
                match options.output {
                    Format::Table => summary.write_table(&mut out)?,
                    Format::Json => summary.write_json(&mut out)?,
                }
                Ok(scanned)
            })
        }
    };
    let scanned = match scanned.and_then(|scanned| out.flush().map(|()| scanned)) {
        Ok(scanned) => scanned,
        // `attestgate audit | head`: the reader has all it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Outcome::Success),
        Err(e) => return Err(e).context("writing the results"),
    };
    for (path, unreadable) in &scanned.unreadable_lines {
        let lines = if *unreadable == 1 { "line" } else { "lines" };
        eprintln!(
            "attestgate: {unreadable} {lines} could not be read in {}",
            path.display()
        );
    }
    if !scanned.failed_files.is_empty() {
        for (_, why) in &scanned.failed_files {
            eprintln!("attestgate: {why:#}");
        }
        bail!(
            "{} of {} audit log files could not be read to the end",
            scanned.failed_files.len(),
            files.len()
        );
    }
    Ok(Outcome::Success)
}

#[derive(Default)]
struct Scanned {
    unreadable_lines: Vec<(PathBuf, u64)>,
    /// Files that could not be opened or ended in the middle of a stream;
    /// the others are still read, and the query then fails.
    failed_files: Vec<(PathBuf, anyhow::Error)>,
}

/// Hands each matching record, with its line as written, to `each_match`,
/// file by file, oldest first. A write error stops the scan.
fn scan(
    files: &[PathBuf],
    query: &Query,
    mut each_match: impl FnMut(&[u8], record::Record<'_>) -> io::Result<()>,
) -> io::Result<Scanned> {
    let mut scanned = Scanned::default();
    for path in files {
        let mut unreadable = 0u64;
        let mut write_error = None;
        let read = read_file(path, |line| match line {
            // Not a record the node could have written.
            files::Line::TooLong => {
                unreadable += 1;
                true
            }
            files::Line::Whole(line) => match query.judge(line) {
                Verdict::Match(record) => match each_match(line, record) {
                    Ok(()) => true,
                    Err(e) => {
                        write_error = Some(e);
                        false
                    }
                },
                Verdict::NoMatch => true,
                Verdict::Unreadable => {
                    unreadable += 1;
                    true
                }
            },
        });
        if let Some(e) = write_error {
            return Err(e);
        }
        if unreadable > 0 {
            scanned.unreadable_lines.push((path.clone(), unreadable));
        }
        if let Err(e) = read {
            scanned.failed_files.push((path.clone(), e));
        }
    }
    Ok(scanned)
}

fn read_file(path: &Path, each_line: impl FnMut(files::Line<'_>) -> bool) -> Result<()> {
    let reader = files::open(path)?;
    files::for_each_line(reader, each_line).with_context(|| format!("reading {}", path.display()))
}
