//! The `hb-agent` command: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hb_agent::config::{self, SystemHost};
use hb_agent::control::{self, Request, Response};
use hb_agent::daemon::{self, RunOptions, DEFAULT_PIN_ROOT, DEFAULT_STATE_DIR};

/// hb-agent: high-availability failover for a pair (or more) of Linux balancers.
///
/// Reads Heartbeat's configuration (ha.cf, haresources, authkeys), exchanges authenticated
/// heartbeats checked and timestamped in the kernel by an XDP program, and moves the
/// service addresses and services of each resource group to a live node.
#[derive(Parser, Debug)]
#[command(name = "hb-agent", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (as a daemon in the foreground; systemd or the shell backgrounds it).
    Run(RunArgs),
    /// Check ha.cf, haresources and authkeys; print the effective configuration and every
    /// problem. Exit 0 when usable, 1 when not.
    CheckConfig(CheckArgs),
    /// Show this node's view of the cluster (what cl_status answered).
    Status(StatusArgs),
    /// Hand this node's resource groups to the peers (as hb_standby did).
    Standby(SocketArgs),
    /// Take every resource group to this node (as hb_takeover did).
    Takeover(SocketArgs),
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// Directory holding ha.cf, haresources and authkeys.
    #[arg(long, default_value = "/etc/ha.d")]
    config_dir: PathBuf,
    /// This node's name, if not the hostname (uname -n).
    #[arg(long)]
    node: Option<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where the generation number is kept across restarts.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Control socket path (default: ha.cf's control_socket, else /run/hb-agent/hb-agent.sock).
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// bpffs directory under which this node's BPF objects are pinned (<dir>/<node>/v1/).
    #[arg(long, default_value = DEFAULT_PIN_ROOT)]
    bpf_pin_root: PathBuf,
}

#[derive(Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct SocketArgs {
    /// The running agent's control socket.
    #[arg(long, default_value = control::DEFAULT_SOCKET)]
    control_socket: PathBuf,
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    socket: SocketArgs,
    /// Print JSON instead of text (with --watch: one JSON document per line).
    #[arg(long)]
    json: bool,
    /// Refresh in place until interrupted, like watch(1); while the agent cannot be
    /// reached, say why and keep trying.
    #[arg(long)]
    watch: bool,
    /// With --watch: time between refreshes, in ha.cf's time syntax (`500ms`, `2`).
    #[arg(long, default_value = "1", value_parser = parse_interval)]
    interval: std::time::Duration,
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    match config::timer::parse_time(text) {
        Ok(interval) if interval >= std::time::Duration::from_millis(50) => Ok(interval),
        Ok(_) => Err("the interval is at least 50ms".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let log_files = init_logging();
    let cli = Cli::parse();
    match execute(cli, log_files) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hb-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Standard error (filtered by HB_LOG), plus ha.cf's logfile/debugfile once `run` has read
/// the configuration.
fn init_logging() -> hb_agent::logging::LogFiles {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let files = hb_agent::logging::LogFiles::new();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(files.layer())
        .init();
    files
}

fn execute(cli: Cli, log_files: hb_agent::logging::LogFiles) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            daemon::run(RunOptions {
                config_dir: args.config.config_dir,
                node: args.config.node,
                state_dir: args.state_dir,
                control_socket: args.control_socket,
                pin_root: args.bpf_pin_root,
                log_files,
            })
            .context("hb-agent run")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig(args) => {
            let report = config::load(
                &args.config.config_dir,
                args.config.node.as_deref(),
                &SystemHost,
            );
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render_text());
            }
            Ok(if report.is_usable() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status(args) if args.watch => watch_status(&args),
        Command::Status(args) => {
            let status = ask_status(&args.socket.control_socket)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Standby(args) => say(ask(&args.control_socket, Request::Standby)?),
        Command::Takeover(args) => say(ask(&args.control_socket, Request::Takeover)?),
    }
}

fn ask_status(socket: &std::path::Path) -> anyhow::Result<control::Status> {
    match ask(socket, Request::Status)? {
        Response::Status(status) => Ok(*status),
        other => bail!("unexpected answer from the agent: {other:?}"),
    }
}

/// `status --watch`: the screen is cleared and redrawn every interval (text), or one JSON
/// line is printed per interval, until interrupted.
fn watch_status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let socket = &args.socket.control_socket;
    loop {
        let answer = ask_status(socket);
        let mut out = std::io::stdout().lock();
        let now = utc_clock();
        let written = if args.json {
            let line = match &answer {
                Ok(status) => serde_json::to_string(status)?,
                Err(e) => serde_json::json!({ "error": format!("{e:#}") }).to_string(),
            };
            writeln!(out, "{line}")
        } else {
            // Home, clear screen: redrawn in place like watch(1).
            let body = match &answer {
                Ok(status) => status.render(),
                Err(e) => format!("cannot reach the agent at {}: {e:#}\n", socket.display()),
            };
            write!(
                out,
                "\x1b[H\x1b[2J\
                 Every {:.1}s: hb-agent status    {now}\n\n{body}",
                args.interval.as_secs_f64()
            )
        };
        // A closed pipe (`| head`) ends the watch.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(ExitCode::SUCCESS);
        }
        drop(out);
        std::thread::sleep(args.interval);
    }
}

/// The wall-clock time, UTC, to the second, for the watch header.
fn utc_clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02} UTC")
}

fn ask(socket: &std::path::Path, request: Request) -> anyhow::Result<Response> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(control::request(socket, request))?)
}

fn say(response: Response) -> anyhow::Result<ExitCode> {
    match response {
        Response::Ok(message) => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Response::Error(message) => bail!("{message}"),
        Response::Status(_) => bail!("unexpected status answer"),
    }
}
