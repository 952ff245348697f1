//! The `drover` binary: parses flags, sets up logging, and hands over to the library.

use anyhow::Context as _;
use clap::Parser;
use drover_control::cli::{self, Cli, Command};
use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                let default = match cli.command {
                    Command::Server(_) => "info,openraft=warn",
                    _ => "warn",
                };
                tracing_subscriber::EnvFilter::new(default)
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli {
        endpoints,
        timeout,
        output,
        tls,
        command,
    } = cli;
    let token = tls.token.clone();
    let tls = tls.load()?;
    let target = cli::Target {
        endpoints,
        timeout: std::time::Duration::from_secs(timeout),
        tls: tls.clone(),
        token,
    };
    if let Command::Server(args) = command {
        // The controller runs actix actors: it needs an actix System over a multi-threaded
        // tokio runtime (tonic and openraft run on its workers).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot build the tokio runtime")?;
        return actix::System::with_tokio_rt(move || runtime).block_on(async move {
            let listener = tokio::net::TcpListener::bind(&args.listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.listen))?;
            drover_proto::transport::check_plaintext(
                tls.is_some(),
                args.insecure,
                args.allow_insecure_non_loopback,
                listener.local_addr()?,
            )?;
            if args.insecure {
                tracing::warn!("{}", drover_proto::transport::PLAINTEXT_WARNING);
            }
            // Harnesses that pass port 0 read the real address from this line.
            println!("listening on {}", listener.local_addr()?);
            std::io::stdout().flush()?;
            drover_control::serve(args, tls, listener)
                .await
                .map(|ended| match ended {
                    drover_control::server::Ended::Shutdown => ExitCode::SUCCESS,
                    // Its service manager starts it again; it rejoins as a follower.
                    drover_control::server::Ended::StoppedByDrill { .. } => {
                        ExitCode::from(drover_control::server::DRILL_EXIT_CODE)
                    }
                })
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let printed = match command {
            Command::Dev(args) => {
                let mut cluster = drover_control::dev::start(&args).await?;
                println!("{}", cluster.banner());
                std::io::stdout().flush()?;
                cluster.supervise(drover_control::shutdown_signal()).await;
                eprintln!("stopping the dev cluster…");
                cluster.stop().await;
                return Ok(ExitCode::SUCCESS);
            }
            Command::Cluster(cmd) => cli::cluster(&target, output, cmd).await?,
            Command::Host(cmd) => cli::host(&target, output, cmd).await?,
            Command::Vm(cmd) => cli::vm(&target, output, cmd).await?,
            Command::Ha(cmd) => cli::ha(&target, output, cmd).await?,
            Command::Event(cmd) => cli::event(&target, output, cmd).await?,
            Command::Op(cmd) => cli::op(&target, output, cmd).await?,
            Command::Certs(cmd) => cli::certs(cmd)?,
            Command::Token(cmd) => cli::token(&target, output, cmd).await?,
            Command::Pool(cmd) => cli::pool(&target, output, cmd).await?,
            Command::Image(cmd) => cli::image(&target, output, cmd).await?,
            Command::Net(cmd) => cli::net(&target, output, cmd).await?,
            Command::Sg(cmd) => cli::sg(&target, output, cmd).await?,
            Command::Drill(cmd) => cli::drill(&target, output, cmd).await?,
            Command::Server(_) => unreachable!("handled above"),
        };
        println!("{}", printed.stdout);
        if let Some(note) = printed.note {
            eprintln!("{note}");
        }
        if let Some(failure) = printed.failure {
            anyhow::bail!(failure);
        }
        Ok(ExitCode::SUCCESS)
    })
}
