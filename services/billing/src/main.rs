//! `backbone-billing`: parse the command line, start telemetry, then serve or migrate.

use std::process::ExitCode;

use backbone_billing::config::{Cli, Command, ENV_PREFIX, SERVICE};
use backbone_common::{app, config, serve::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = config::parse(ENV_PREFIX);
    let telemetry = telemetry::init(SERVICE, &cli.config.telemetry);
    let result = match cli.command.unwrap_or_default() {
        Command::Serve => match app::bind(cli.config.listen_addr).await {
            Ok(listener) => backbone_billing::run(cli.config, listener, shutdown_signal()).await,
            Err(err) => Err(err),
        },
        Command::Migrate => backbone_billing::migrate(&cli.config).await,
    };
    let code = app::exit_code(result);
    telemetry.shutdown();
    code
}
