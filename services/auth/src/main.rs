//! `backbone-auth`: parse the command line, start telemetry, then serve, migrate or create an
//! administrator.

use std::{
    io::{IsTerminal as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    process::ExitCode,
};

use backbone_auth::config::{Cli, Command, ENV_PREFIX, SERVICE};
use backbone_common::{
    app::{self, AppError},
    config,
    serve::shutdown_signal,
    telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = config::parse(ENV_PREFIX);
    let telemetry = telemetry::init(SERVICE, &cli.config.telemetry);
    let result = match cli.command.clone().unwrap_or_default() {
        Command::Serve => match app::bind(cli.config.listen_addr).await {
            Ok(listener) => backbone_auth::run(cli.config, listener, shutdown_signal()).await,
            Err(err) => Err(err),
        },
        Command::Migrate => backbone_auth::migrate(&cli.config).await,
        Command::CreateAdmin {
            email,
            display_name,
        } => create_admin(&cli, &email, display_name.as_deref()).await,
        Command::CreateServiceAccount {
            display_name,
            secret_file,
        } => create_service_account(&cli, &display_name, &secret_file).await,
    };
    let code = app::exit_code(result);
    telemetry.shutdown();
    code
}

async fn create_admin(cli: &Cli, email: &str, display_name: Option<&str>) -> Result<(), AppError> {
    let password = read_password()?;
    let (user, created) =
        backbone_auth::create_admin(&cli.config, email, display_name, &password).await?;
    if created {
        println!("created administrator {} ({})", user.email, user.id);
    } else {
        println!(
            "granted the admin role to {} ({}); the password was not changed",
            user.email, user.id
        );
    }
    Ok(())
}

async fn create_service_account(
    cli: &Cli,
    display_name: &str,
    secret_file: &Path,
) -> Result<(), AppError> {
    let to_stdout = secret_file == Path::new("-");
    // Refuse before creating anything: an account whose secret was lost is of no use.
    if !to_stdout && secret_file.exists() {
        return Err(AppError::Command(format!(
            "{} exists; the secret file is never overwritten",
            secret_file.display()
        )));
    }
    let (client_id, secret) =
        backbone_auth::create_service_account(&cli.config, display_name).await?;
    if to_stdout {
        println!("{client_id}\n{secret}");
        return Ok(());
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret_file)
        .and_then(|mut file| file.write_all(secret.as_bytes()));
    written.map_err(|err| {
        AppError::Command(format!(
            "writing the secret of service account {client_id} to {}: {err}",
            secret_file.display()
        ))
    })?;
    println!("{client_id}");
    Ok(())
}

/// The password from the terminal (asked twice) or from stdin's first line.
fn read_password() -> Result<String, AppError> {
    let failed = |err: std::io::Error| AppError::Command(format!("reading the password: {err}"));
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(failed)?;
        let again = rpassword::prompt_password("Password again: ").map_err(failed)?;
        if first != again {
            return Err(AppError::Command("the passwords differ".into()));
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(failed)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
