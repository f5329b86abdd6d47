//! Accounts, their limits and tokens: `account ...`.

use std::process::ExitCode;

use serde::Deserialize;

use super::{path_segment, print, CliError, Client};
use crate::cli::{AccountCommand, KeyCommand, LimitArgs, LimitsCommand, TokenCommand};

#[derive(Deserialize)]
pub(super) struct AccountView {
    pub(super) name: String,
    limits: tenure_events::Limits,
    public_key: Option<String>,
    #[serde(default)]
    tokens: Vec<TokenView>,
    #[serde(default)]
    usage: Option<UsageView>,
}

#[derive(Deserialize)]
struct UsageView {
    leases: usize,
    keys: usize,
}

#[derive(Deserialize)]
struct TokenView {
    id: String,
    label: Option<String>,
    created_at: String,
}

#[derive(Deserialize)]
struct AccountList {
    accounts: Vec<AccountView>,
}

#[derive(Deserialize)]
struct TokenList {
    tokens: Vec<TokenView>,
}

#[derive(Deserialize)]
struct Issued {
    id: String,
    token: String,
}

fn limits_body(limits: LimitArgs) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    for (name, value) in [
        ("max_leases", limits.max_leases),
        ("max_keys", limits.max_keys),
        ("max_reserved_shares", limits.max_reserved_shares),
        ("max_services", limits.max_services),
    ] {
        if let Some(value) = value {
            body.insert(name.into(), value.into());
        }
    }
    serde_json::Value::Object(body)
}

/// `max_leases=2 max_keys=-1 ...`.
fn limits_line(limits: &tenure_events::Limits) -> String {
    limits
        .named()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_account(view: &AccountView) {
    print(format!("name: {}", view.name));
    print(format!("limits: {}", limits_line(&view.limits)));
    if let Some(usage) = &view.usage {
        print(format!("usage: leases={} keys={}", usage.leases, usage.keys));
    }
    print(format!("public key: {}", view.public_key.as_deref().unwrap_or("none")));
    print(format!("tokens: {}", view.tokens.len()));
}

pub(super) async fn account(client: &Client, command: AccountCommand) -> Result<ExitCode, CliError> {
    let http = &client.http;
    let account_url = |name: &str, rest: &str| client.url(&format!("/v1/accounts/{}{rest}", path_segment(name)));
    match command {
        AccountCommand::Create { name, limits } => {
            let body = serde_json::json!({ "name": name, "limits": limits_body(limits) });
            let view: AccountView = client.send(http.post(client.url("/v1/accounts")).json(&body)).await?;
            print(format!("account '{}' created", view.name));
        }
        AccountCommand::List => {
            let list: AccountList = client.send(http.get(client.url("/v1/accounts"))).await?;
            for a in list.accounts {
                print(format!(
                    "{} {} tokens={}",
                    a.name,
                    limits_line(&a.limits),
                    a.tokens.len()
                ));
            }
        }
        AccountCommand::Get { name } => {
            let view: AccountView = client.send(http.get(account_url(&name, ""))).await?;
            print_account(&view);
        }
        AccountCommand::Whoami => {
            let view: AccountView = client.send(http.get(client.url("/v1/account"))).await?;
            print_account(&view);
        }
        AccountCommand::Token(TokenCommand::Create { account, label }) => {
            let body = serde_json::json!({ "label": label });
            let issued: Issued = client
                .send(http.post(account_url(&account, "/tokens")).json(&body))
                .await?;
            // The token alone on stdout, for `export TENURE_TOKEN=$(...)`.
            print(&issued.token);
            eprintln!(
                "token '{}' created for account '{account}'; it is shown only this once",
                issued.id
            );
        }
        AccountCommand::Token(TokenCommand::List { account }) => {
            let list: TokenList = client.send(http.get(account_url(&account, "/tokens"))).await?;
            for t in list.tokens {
                print(format!("{} {} {}", t.id, t.created_at, t.label.unwrap_or_default()).trim_end());
            }
        }
        AccountCommand::Token(TokenCommand::Revoke { account, id }) => {
            let url = account_url(&account, &format!("/tokens/{}", path_segment(&id)));
            let _: serde_json::Value = client.send(http.delete(url)).await?;
            print(format!("token '{id}' of account '{account}' revoked"));
        }
        AccountCommand::Limits(LimitsCommand::Set { account, limits }) => {
            let body = limits_body(limits);
            let view: AccountView = client
                .send(http.put(account_url(&account, "/limits")).json(&body))
                .await?;
            print(format!("account '{}' limits: {}", view.name, limits_line(&view.limits)));
        }
        AccountCommand::Key(KeyCommand::Generate { file }) => {
            let public_key = generate_key(&file)?;
            print(format!("secret key written to {}", file.display()));
            print(format!("public key: {public_key}"));
            print(format!("register it with: tenure account key set {public_key}"));
        }
        AccountCommand::Key(KeyCommand::Set { public_key }) => {
            let body = serde_json::json!({ "public_key": public_key });
            let view: AccountView = client.send(http.put(client.url("/v1/account/key")).json(&body)).await?;
            print(format!("public key registered for account '{}'", view.name));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes a new secret key to `path` (owner-only) and answers the public key.
fn generate_key(path: &std::path::Path) -> Result<String, CliError> {
    use base64::Engine;
    use std::io::Write;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| CliError::Usage(format!("the OS random source failed: {e}")))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| CliError::Usage(format!("cannot create {}: {e}", path.display())))?;
    writeln!(file, "{}", b64.encode(seed))
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))?;
    Ok(b64.encode(key.verifying_key().to_bytes()))
}
