//! `userdir keys`: make, list and revoke API keys on a running server, and
//! generate an operator key offline for a deployment's configuration.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use userdir_domain::apikey::NewApiKey;
use userdir_domain::keys::ConfiguredKey;
use userdir_domain::text::Timestamp;

use super::common::{ServerArgs, authed_channel, describe_status, tenant_parent};
use crate::pb;
use crate::pb::api_keys_client::ApiKeysClient;

/// Manage API keys.
#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a key on the server and print its token, once.
    Create(CreateArgs),
    /// List the keys the caller may see.
    List(ListArgs),
    /// Revoke a key (`apiKeys/ID` or the ID); every replica stops taking it within seconds.
    Revoke(RevokeArgs),
    /// Print a new operator key (line 1) and its hash (line 2) without a
    /// server: give the server the hash (USERDIR_OPERATOR_KEY=udkh_...) and
    /// the operator the key.
    Generate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    Read,
    Write,
    Import,
    Export,
    Admin,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// What the key is for (`ci-import`), 1 to 100 characters.
    #[arg(long)]
    pub name: String,
    /// The tenant it reaches (`acme`); without it, every tenant (an operator's key).
    #[arg(long)]
    pub tenant: Option<String>,
    /// What it may do; repeat or comma-separate (`--scope read,import`).
    #[arg(long = "scope", value_enum, value_delimiter = ',', required = true)]
    pub scopes: Vec<ScopeArg>,
    /// It may send `x-userdir-acting-user` to act for a user of its tenant.
    #[arg(long)]
    pub act_as_users: bool,
    /// Bind it to one user (`tenants/acme/users/ID`, or the ID with
    /// --tenant): every call with it acts for that user.
    #[arg(long, conflicts_with = "act_as_users")]
    pub user: Option<String>,
    /// When it stops working (RFC 3339: `2027-03-31T00:00:00Z`).
    #[arg(long)]
    pub expire_time: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this tenant's keys.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Revoked keys too.
    #[arg(long)]
    pub show_revoked: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// `apiKeys/ID`, or the ID (the 32 hex digits after `udk_` in the token).
    pub key: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn run(args: KeysArgs) -> ExitCode {
    let result = match args.command {
        KeysCommand::Create(a) => create(a).await,
        KeysCommand::List(a) => list(a).await,
        KeysCommand::Revoke(a) => revoke(a).await,
        KeysCommand::Generate => generate(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("userdir keys: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn client(server: &ServerArgs) -> Result<ApiKeysClient<crate::client::AuthedChannel>, String> {
    Ok(ApiKeysClient::new(authed_channel(server).await?))
}

fn scope_to_pb(scope: ScopeArg) -> pb::Scope {
    match scope {
        ScopeArg::Read => pb::Scope::Read,
        ScopeArg::Write => pb::Scope::Write,
        ScopeArg::Import => pb::Scope::Import,
        ScopeArg::Export => pb::Scope::Export,
        ScopeArg::Admin => pb::Scope::Admin,
    }
}

async fn create(args: CreateArgs) -> Result<(), String> {
    let expire_time = match &args.expire_time {
        None => None,
        Some(text) => {
            let t = Timestamp::parse_rfc3339(text)
                .ok_or_else(|| format!("--expire-time {text:?} is not RFC 3339 (2027-03-31T00:00:00Z)"))?;
            let (seconds, nanos) = t.seconds_nanos();
            Some(prost_types::Timestamp { seconds, nanos })
        }
    };
    let key = pb::ApiKey {
        display_name: args.name.clone(),
        tenant: args
            .tenant
            .as_deref()
            .map(tenant_parent)
            .transpose()?
            .unwrap_or_default(),
        scopes: args.scopes.iter().map(|s| scope_to_pb(*s) as i32).collect(),
        act_as_users: args.act_as_users,
        expire_time,
        user: match (&args.user, &args.tenant) {
            (None, _) => String::new(),
            (Some(user), _) if user.starts_with("tenants/") => user.clone(),
            (Some(id), Some(tenant)) => format!("{}/users/{id}", tenant_parent(tenant)?),
            (Some(_), None) => return Err("--user takes tenants/T/users/ID, or the ID with --tenant".to_owned()),
        },
        ..Default::default()
    };
    let made = client(&args.server)
        .await?
        .create_api_key(pb::CreateApiKeyRequest { api_key: Some(key) })
        .await
        .map_err(|s| describe_status(&s))?
        .into_inner();
    let key = made.api_key.unwrap_or_default();
    eprintln!(
        "made {} ({}); its token is printed once, below: keep it in a secret store",
        key.name,
        describe(&key)
    );
    println!("{}", made.token);
    Ok(())
}

async fn list(args: ListArgs) -> Result<(), String> {
    let mut client = client(&args.server).await?;
    let tenant = args
        .tenant
        .as_deref()
        .map(tenant_parent)
        .transpose()?
        .unwrap_or_default();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_api_keys(pb::ListApiKeysRequest {
                tenant: tenant.clone(),
                show_revoked: args.show_revoked,
                page_size: 1000,
                page_token: page_token.clone(),
            })
            .await
            .map_err(|s| describe_status(&s))?
            .into_inner();
        for key in &page.api_keys {
            println!("{}\t{}\t{}", key.name, key.display_name, describe(key));
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

async fn revoke(args: RevokeArgs) -> Result<(), String> {
    let name = if args.key.starts_with("apiKeys/") {
        args.key.clone()
    } else {
        format!("apiKeys/{}", args.key)
    };
    let key = client(&args.server)
        .await?
        .revoke_api_key(pb::RevokeApiKeyRequest { name })
        .await
        .map_err(|s| describe_status(&s))?
        .into_inner();
    println!("revoked {} ({})", key.name, key.display_name);
    Ok(())
}

fn generate() -> Result<(), String> {
    let key = NewApiKey::generate().map_err(|e| format!("no random bytes from the system: {e}"))?;
    eprintln!(
        "a new operator key (line 1, for the operator) and its hash (line 2, for the server's \
         USERDIR_OPERATOR_KEY or --operator-key-file); the server stores it at its next start"
    );
    println!("{}", key.token());
    println!("{}", ConfiguredKey::hash_form(&key));
    Ok(())
}

/// `acme: read,import; acts for users; expires ...; revoked ...`.
fn describe(key: &pb::ApiKey) -> String {
    let scopes: Vec<&str> = key
        .scopes
        .iter()
        .filter_map(|s| pb::Scope::try_from(*s).ok())
        .map(|s| match s {
            pb::Scope::Read => "read",
            pb::Scope::Write => "write",
            pb::Scope::Import => "import",
            pb::Scope::Export => "export",
            pb::Scope::Admin => "admin",
            pb::Scope::Unspecified => "?",
        })
        .collect();
    let mut text = format!(
        "{}: {}",
        if key.tenant.is_empty() {
            "every tenant"
        } else {
            key.tenant.as_str()
        },
        scopes.join(",")
    );
    if key.act_as_users {
        text.push_str("; acts for users");
    }
    if !key.user.is_empty() {
        text.push_str(&format!("; acts for {}", key.user));
    }
    let when = |t: &prost_types::Timestamp| Timestamp::from_seconds_nanos(t.seconds, t.nanos).to_rfc3339();
    if let Some(t) = &key.expire_time {
        text.push_str(&format!("; expires {}", when(t)));
    }
    if let Some(t) = &key.last_used_time {
        text.push_str(&format!("; last used {}", when(t)));
    }
    if let Some(t) = &key.revoke_time {
        text.push_str(&format!("; revoked {}", when(t)));
    }
    text
}
