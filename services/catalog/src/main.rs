//! `backbone-catalog`: parse the command line, start telemetry, then serve, migrate or seed.

use std::process::ExitCode;

use backbone_catalog::config::{Cli, Command, ENV_PREFIX, SERVICE};
use backbone_common::{app, config, serve::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = config::parse(ENV_PREFIX);
    let telemetry = telemetry::init(SERVICE, &cli.config.telemetry);
    let result = match cli.command.unwrap_or_default() {
        Command::Serve => match app::bind(cli.config.listen_addr).await {
            Ok(listener) => backbone_catalog::run(cli.config, listener, shutdown_signal()).await,
            Err(err) => Err(err),
        },
        Command::Migrate => backbone_catalog::migrate(&cli.config).await,
        Command::Seed => backbone_catalog::seed(&cli.config).await.map(|report| {
            println!(
                "sample catalog in place: {} categories, {} products and {} stock levels added",
                report.categories_created, report.products_created, report.products_stocked
            );
        }),
    };
    let code = app::exit_code(result);
    telemetry.shutdown();
    code
}
