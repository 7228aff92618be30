//! The command line: `portico run`, `portico check`, `portico explain`, `portico dlq replay`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "portico",
    version,
    about = "Bridges messages between AMQP 0-9-1, AMQP 1.0 and Kafka without losing a field"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every bridge in the configuration until SIGINT or SIGTERM.
    Run {
        #[arg(long, short, default_value = "bridges.yaml", env = "PORTICO_CONFIG")]
        config: PathBuf,
    },
    /// Validate the configuration without connecting to any broker.
    Check {
        #[arg(long, short, default_value = "bridges.yaml", env = "PORTICO_CONFIG")]
        config: PathBuf,
    },
    /// Show, field by field, what a bridge makes of a message: a sample, or a few real ones
    /// taken from the source without consuming them.
    Explain {
        /// The bridge, by name.
        #[arg(long)]
        bridge: String,
        /// A YAML file describing one message of the bridge's source protocol.
        #[arg(long, required_unless_present = "live", conflicts_with = "live")]
        message: Option<PathBuf>,
        /// Take messages from the source instead, and give them back.
        #[arg(long)]
        live: bool,
        /// How many messages --live takes.
        #[arg(long, default_value_t = 1, requires = "live")]
        count: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[arg(long, short, default_value = "bridges.yaml", env = "PORTICO_CONFIG")]
        config: PathBuf,
    },
    /// Work with dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Re-drive dead letters of a bridge into its sink; each is removed from the dead-letter
    /// destination only after its re-drive was confirmed.
    Replay {
        #[arg(long, short, default_value = "bridges.yaml", env = "PORTICO_CONFIG")]
        config: PathBuf,
        /// The bridge whose dead letters to replay (its dead_letter is read).
        #[arg(long)]
        bridge: String,
        /// Only dead letters with this reason (`portico.dlq.reason`).
        #[arg(long)]
        reason: Option<String>,
        /// Only dead letters written at or after this time (2026-12-04T18:00:00Z, or 30m ago).
        #[arg(long, value_parser = crate::replay::parse_time)]
        since: Option<i64>,
        /// Only dead letters written before this time.
        #[arg(long, value_parser = crate::replay::parse_time)]
        until: Option<i64>,
        /// Re-drive into the sink of this bridge instead.
        #[arg(long)]
        sink: Option<String>,
        /// List what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The queue holding the dead letters (AMQP 0-9-1 default: the dead_letter's routing
        /// key, when it publishes to the default exchange; AMQP 1.0: its address).
        #[arg(long)]
        queue: Option<String>,
        /// Kafka: the consumer group that records what was replayed.
        #[arg(long, default_value = "portico-dlq-replay")]
        group: String,
        /// Kafka and AMQP 1.0: stop after this long without a new dead letter.
        #[arg(long, default_value = "3s", value_parser = parse_span)]
        idle: std::time::Duration,
    },
}

fn parse_span(text: &str) -> Result<std::time::Duration, String> {
    crate::config::file::Span::parse(text)
        .map(|s| s.0)
        .ok_or_else(|| format!("invalid duration {text:?}: write 500ms, 3s or 1m"))
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
        Command::Explain { bridge, message, live, count, format, config } => {
            let what = match message {
                Some(path) => Sample::File(path),
                None if live => Sample::Live(count),
                None => Sample::Live(1),
            };
            explain(&config, &bridge, what, format)
        }
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    config,
                    bridge,
                    reason,
                    since,
                    until,
                    sink,
                    dry_run,
                    queue,
                    group,
                    idle,
                },
        } => {
            let options = crate::replay::Options {
                bridge,
                reason,
                since,
                until,
                sink,
                dry_run,
                queue,
                group,
                idle,
            };
            replay(&config, options)
        }
    }
}

enum Sample {
    File(PathBuf),
    Live(usize),
}

fn explain(path: &std::path::Path, name: &str, sample: Sample, format: Format) -> ExitCode {
    let model = match load(path) {
        Ok(model) => model,
        Err(code) => return code,
    };
    let Some(bridge) = model.bridges.iter().find(|b| b.name == name) else {
        let names: Vec<&str> = model.bridges.iter().map(|b| b.name.as_str()).collect();
        eprintln!("{}: no bridge named {name:?}; bridges: {}", path.display(), names.join(", "));
        return ExitCode::from(2);
    };
    let messages = match sample {
        Sample::File(file) => match crate::explain::sample::load(&file, &bridge.source) {
            Ok(envelope) => vec![(file.display().to_string(), envelope)],
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(2);
            }
        },
        Sample::Live(count) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            let peeked = match runtime {
                Ok(rt) => rt.block_on(crate::explain::live::peek(name, &bridge.source, count)),
                Err(error) => Err(format!("cannot start the async runtime: {error}")),
            };
            match peeked {
                Ok(messages) if messages.is_empty() => {
                    eprintln!(
                        "No message waiting at the source of bridge {name:?} within {:?}",
                        crate::explain::live::WAIT
                    );
                    return ExitCode::from(1);
                }
                Ok(messages) => messages,
                Err(error) => {
                    eprintln!("Cannot take messages from the source of bridge {name:?}: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let explained: Vec<_> = messages
        .into_iter()
        .map(|(label, envelope)| crate::explain::explain(bridge, &envelope, label))
        .collect();
    match format {
        Format::Text => {
            let texts: Vec<String> = explained.iter().map(crate::explain::render::text).collect();
            print!("{}", texts.join("\n"));
        }
        Format::Json => {
            let json: Vec<_> = explained.iter().map(crate::explain::render::json).collect();
            let json = if json.len() == 1 {
                json.into_iter().next().unwrap_or_default()
            } else {
                serde_json::Value::Array(json)
            };
            println!("{json:#}");
        }
    }
    ExitCode::SUCCESS
}

fn replay(path: &std::path::Path, options: crate::replay::Options) -> ExitCode {
    let model = match load(path) {
        Ok(model) => model,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(crate::replay::run(model, options));
    runtime.shutdown_timeout(LEFTOVER_WORK_DEADLINE);
    match result {
        Ok(tally) => {
            println!("{tally}");
            if tally.failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(3) }
        }
        Err(error) => {
            eprintln!("dlq replay failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match crate::config::load(path) {
        Ok(model) => {
            println!(
                "{}: ok ({} connections, {} bridges)",
                path.display(),
                model.connections.len(),
                model.bridges.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let model = match load(path) {
        Ok(model) => model,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(crate::app::run(model));
    runtime.shutdown_timeout(LEFTOVER_WORK_DEADLINE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "Gateway failed");
            ExitCode::FAILURE
        }
    }
}

/// Loads and checks the configuration; on failure prints every problem and gives exit code 2.
fn load(path: &std::path::Path) -> Result<crate::config::Model, ExitCode> {
    crate::config::load(path).map_err(|error| {
        eprintln!("{error}");
        ExitCode::from(2)
    })
}

/// How long the process waits, once done, for blocking client calls it gave up on (a Kafka
/// consumer leaving its group through a broker that stopped answering) before it exits.
const LEFTOVER_WORK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// The multi-threaded runtime the gateway and `dlq replay` run on.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|error| {
        eprintln!("cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

/// The `fmt` builder every log format starts from. It lets every level through, so that
/// `PORTICO_LOG` alone decides: its own default would hold back everything below INFO.
pub(crate) fn log_builder<W>(
    writer: W,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    crate::telemetry::text::TextFields,
    tracing_subscriber::fmt::format::Format,
    tracing::level_filters::LevelFilter,
    W,
>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // The text format's fields; `.json()` replaces them with its own.
    tracing_subscriber::fmt()
        .with_max_level(tracing::level_filters::LevelFilter::TRACE)
        .with_writer(writer)
        .fmt_fields(crate::telemetry::text::TextFields)
}

/// The log filter when `PORTICO_LOG` is unset. What fails in a lapin call, portico reports
/// in its own words (the broker's reply included); lapin's own lines would repeat it in
/// another style, several times per reconnect, so they are off unless asked for.
const DEFAULT_LOG: &str = "info,lapin=off,rdkafka=warn";

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let asked = std::env::var("PORTICO_LOG").ok();
    let parsed = asked.as_deref().map(log_targets);
    let targets = match &parsed {
        Some(Ok(targets)) => targets.clone(),
        _ => DEFAULT_LOG.parse().unwrap_or_else(|_| Targets::new()),
    };
    // Colours only for a person at a terminal: a file or a log shipper gets plain text.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let colour = std::io::stderr().is_terminal() && !no_color;
    match format {
        LogFormat::Text => {
            log_builder(std::io::stderr).with_ansi(colour).finish().with(targets).init()
        }
        LogFormat::Json => log_builder(std::io::stderr)
            .with_ansi(colour)
            .json()
            .flatten_event(true)
            .finish()
            .with(targets)
            .init(),
    }
    if let (Some(asked), Some(Err(error))) = (asked, parsed) {
        tracing::warn!(value = %asked, %error, default = DEFAULT_LOG,
            "Ignoring PORTICO_LOG: write it as LEVEL,TARGET=LEVEL,... (e.g. info,portico=debug)");
    }
}

/// Reads `LEVEL,TARGET=LEVEL,...`, spaces around each directive allowed.
fn log_targets(
    value: &str,
) -> Result<tracing_subscriber::filter::Targets, tracing_subscriber::filter::ParseError> {
    value.split(',').map(str::trim).filter(|d| !d.is_empty()).collect::<Vec<_>>().join(",").parse()
}

#[cfg(test)]
mod log_tests {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn directives_may_have_spaces_around_them() {
        let targets = super::log_targets(" info, portico=debug ,lapin=error").expect("parses");
        assert!(targets.would_enable("portico::bridge", &tracing::Level::DEBUG));
        assert!(!targets.would_enable("lapin::channel", &tracing::Level::WARN));
        assert!(targets.would_enable("other", &tracing::Level::INFO));
        assert!(super::log_targets("info,portico=loud").is_err());
    }

    #[test]
    fn text_values_that_would_split_are_quoted() {
        let captured = crate::telemetry::CapturedLog::default();
        let writer = captured.clone();
        let subscriber = super::log_builder(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            let (part, bridge) = ("orders sink", "orders");
            let error = String::from("exchange \"x\" does not exist");
            let topics = vec!["a", "b"];
            let queue = "q\x1b[2J";
            tracing::warn!(sink = %part, %bridge, %error, empty = "", count = 3, ?topics,
                %queue, "Sink stopped\non a line of its own");
        });
        let text = captured.text();
        let fields = r#"Sink stopped\non a line of its own sink="orders sink" bridge=orders "#
            .to_owned()
            + r#"error="exchange \"x\" does not exist" empty="" count=3 "#
            + r#"topics="[\"a\", \"b\"]" queue="q\u001b[2J""#;
        assert!(text.trim_end().ends_with(&fields), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn by_default_only_portico_speaks_for_lapin() {
        let targets = super::log_targets(super::DEFAULT_LOG).expect("the default parses");
        assert!(!targets.would_enable("lapin::channels", &tracing::Level::ERROR));
        assert!(targets.would_enable("portico::amqp091", &tracing::Level::INFO));
        assert!(targets.would_enable("rdkafka::client", &tracing::Level::WARN));
    }

    #[test]
    fn portico_log_turns_debug_on_for_one_target() {
        let captured = crate::telemetry::CapturedLog::default();
        let writer = captured.clone();
        let targets: Targets = "info,portico=debug".parse().expect("targets");
        let subscriber = super::log_builder(move || writer.clone()).finish().with(targets);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "portico::bridge", "Shown at debug");
            tracing::debug!(target: "lapin::channel", "Hidden at debug");
            tracing::trace!(target: "portico::bridge", "Hidden at trace");
        });
        let text = captured.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("Shown at debug"), "{text}");
    }
}
