//! The `keygate` command-line tool (feature `server`): run the reference server, and manage
//! accounts and API tokens in its database, e.g. beside a running server.
//!
//! ```text
//! keygate serve                                   # the reference server (keygate::server)
//! keygate serve --help                            # every setting, its variable and default
//! keygate user add alice@example.com --role deployer
//! keygate token create --owner alice@example.com --name ci --role cicd --expires-in 7776000
//! keygate token list --owner alice@example.com --json
//! keygate token rotate --owner alice@example.com <id> --grace-seconds 3600
//! keygate token revoke --owner alice@example.com <id>     # and the tokens that replaced it
//! ```
//!
//! Every command reads the same configuration as the server: flags, then `KEYGATE_*`
//! variables, then the TOML file named by `--config` / `KEYGATE_CONFIG`, then the defaults
//! ([`keygate::server::ConfigLoader`]). The database is `KEYGATE_DB` (or `--db`, or
//! `KEYGATE_DB_FILE`): a SQLite file path (`keygate.db` by default), or a `postgres://` URL
//! (its schema by `KEYGATE_DB_SCHEMA`). It is opened, and accounts are created, exactly as
//! the reference server does; the roles and token kinds are the file's (`[roles]`,
//! `[kinds.*]`). A token is printed once, when it is created or rotated; only its SHA-256
//! is stored.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keygate::accounts::AccountStore;
use keygate::server::bootstrap::{self, AddAccountError};
use keygate::server::{Config, LogFormat, OpenError, OpenOptions, OpenedStore};
use keygate::{Permissions, Roles, TokenError, TokenId, TokenStore, Tokens};

mod import;
mod serve;
mod settings;
mod token;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  usage or validation error (bad arguments or settings, each bad setting on its own
     line; invalid name or permissions, name taken, token limit reached, account already
     exists; `token import`: an entry was not imported; `serve`: an address that cannot
     be bound)
  2  not found (unknown account, or no such token of this owner)
  3  store error (the database cannot be opened, read or written)";

const SETTINGS_HELP: &str = "\
Each setting is read from its flag, else its KEYGATE_* variable, else the --config file
(the same name in snake_case, e.g. rate_limit = 100), else its default. RUST_LOG sets the
log filter (default info).";

/// Run the keygate reference server, and manage its accounts and API tokens.
#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    after_help = EXIT_CODES,
    arg_required_else_help = true
)]
struct Cli {
    /// A TOML file with the settings, roles and token kinds (see keygate.example.toml).
    #[arg(
        long,
        env = "KEYGATE_CONFIG",
        hide_env_values = true,
        global = true,
        value_name = "FILE"
    )]
    config: Option<std::path::PathBuf>,

    #[command(flatten)]
    database: settings::SettingFlags<true>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the reference server: the management API, the token page, /healthz, /readyz,
    /// /metrics and (with --demo on) the demo API.
    #[command(after_help = SETTINGS_HELP)]
    Serve(serve::ServeArgs),
    /// Manage accounts (the owners of tokens).
    #[command(subcommand, after_help = EXIT_CODES)]
    User(UserCommand),
    /// Create, list, rotate and revoke API tokens.
    #[command(subcommand, after_help = EXIT_CODES)]
    Token(TokenCommand),
}

/// `--json`: one JSON object (or array) on standard output instead of text.
#[derive(Clone, Copy, Debug, Args)]
struct Output {
    /// Print one JSON object (or, for lists, one array) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add an account that signs in with email and password (stored as an argon2id hash).
    ///
    /// Without --password-stdin, a random password is generated and printed once.
    /// Without --permissions or --role, the account gets the role `viewer`.
    #[command(after_help = EXIT_CODES)]
    Add(UserAdd),
}

#[derive(Debug, Args)]
struct UserAdd {
    /// The account's email; it owns the account's tokens.
    email: String,
    /// Read the password from the first line of standard input (at least 8 characters).
    #[arg(long)]
    password_stdin: bool,
    /// Explicit permissions, comma-separated (e.g. `apps:read,tokens:*`).
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "role",
        value_name = "LIST"
    )]
    permissions: Option<Vec<String>>,
    /// A role whose permissions the account gets (default roles: viewer, ops, deployer,
    /// cicd, admin; or the configuration file's).
    #[arg(long)]
    role: Option<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once, with its id and hint.
    ///
    /// Without --role or --permissions, the token gets its account's permissions; a token
    /// never holds more than its account.
    #[command(after_help = EXIT_CODES)]
    Create(TokenCreate),
    /// List an owner's tokens, oldest first (never the tokens nor their hashes).
    #[command(after_help = EXIT_CODES)]
    List(TokenList),
    /// Edit a live token in place: name, description, expiry, metadata, and permissions
    /// (only narrower ones).
    #[command(after_help = EXIT_CODES)]
    Update(TokenUpdate),
    /// Revoke a token at once, with the tokens that replaced it by rotation; revocation is
    /// final.
    ///
    /// Whoever held a token may have rotated it and hold its successor, so by default the
    /// whole chain forward is revoked. --keep-successors revokes this token only (to end a
    /// rotation's grace early once every client uses the new token).
    #[command(after_help = EXIT_CODES)]
    Revoke(TokenRevoke),
    /// Replace a token by a new one with the same name and permissions, printed once.
    ///
    /// The old token keeps working for --grace-seconds (default 0: it stops at once; at most
    /// 86400, 24 hours). A token in grace counts against the owner's limit, and rotating
    /// its successor ends the grace at once.
    #[command(after_help = EXIT_CODES)]
    Rotate(TokenRotate),
    /// Free a bound token's machine seat, so the next machine that uses it takes it.
    ///
    /// At most once every 24 hours per token.
    #[command(after_help = EXIT_CODES)]
    Release(TokenRef),
    /// Import tokens another system issued, by their SHA-256, so they keep working.
    ///
    /// Reads JSON Lines (one object a line) from FILE, or standard input with `-` or no
    /// FILE: {"owner", "name", "hash" (64 hex digits), "kind"?, "permissions"?, "role"?,
    /// "description"?, "expires_at"? (RFC 3339), "created_at"?, "hint"?}. Prints one line
    /// per entry, its id or its error (with --json, one object whose results carry the
    /// line number as `index`); exits 1 when any entry failed. A hash already stored
    /// is refused, never overwritten. Tokens in another format than keygate's need their
    /// kind's legacy_length and legacy_alphabet in the configuration file.
    #[command(after_help = EXIT_CODES)]
    Import(TokenImport),
    /// Find a token's owner from its value, read from standard input (e.g. a token found in
    /// a log or a repository): prints its id, owner, name, kind, status and times, never the
    /// token nor its hash.
    ///
    /// The token is never taken as an argument: arguments are kept in shell history and
    /// shown to other users by `ps`. Exit status 2 when no token has this value.
    #[command(after_help = EXIT_CODES)]
    Lookup(TokenLookup),
}

#[derive(Debug, Args)]
struct TokenImport {
    /// A JSON Lines file; `-` or nothing: standard input.
    file: Option<std::path::PathBuf>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct TokenLookup {
    /// Refused: the token is read from standard input only.
    #[arg(hide = true)]
    token: Option<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct TokenList {
    /// The owning account's email (with --all: only this owner's tokens).
    #[arg(long, required_unless_present = "all")]
    owner: Option<String>,
    /// Every owner's tokens (the admin view), revoked ones included until purged.
    #[arg(long)]
    all: bool,
    /// With --all: only tokens with this status (active, expired, revoked, replaced).
    #[arg(long, requires = "all")]
    status: Option<String>,
    /// With --all: only tokens of this kind.
    #[arg(long, requires = "all")]
    kind: Option<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct TokenUpdate {
    #[command(flatten)]
    token: TokenRef,
    /// A new name, unique among the owner's live tokens.
    #[arg(long)]
    name: Option<String>,
    /// A new description.
    #[arg(long, conflicts_with = "clear_description")]
    description: Option<String>,
    /// Remove the description.
    #[arg(long)]
    clear_description: bool,
    /// A new expiry, this many seconds from now.
    #[arg(long, value_name = "SECONDS", conflicts_with = "no_expiry")]
    expires_in: Option<u64>,
    /// Remove the expiry (not for a kind that requires one).
    #[arg(long)]
    no_expiry: bool,
    /// New metadata: a JSON object of at most 1 KiB, replacing the old.
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    /// New permissions, comma-separated: only a subset of the token's.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    permissions: Option<Vec<String>>,
}

#[derive(Debug, Args)]
struct TokenCreate {
    /// The owning account's email.
    #[arg(long)]
    owner: String,
    /// The token's name, unique among the owner's live tokens (1-100 characters).
    #[arg(long)]
    name: String,
    /// Free text shown in lists (1-100 characters).
    #[arg(long)]
    description: Option<String>,
    /// Take the permissions of a role (default roles: viewer, ops, deployer, cicd, admin;
    /// or the configuration file's).
    #[arg(long)]
    role: Option<String>,
    /// The token's kind, by name (default: the first kind of the configuration, `pat`).
    #[arg(long)]
    kind: Option<String>,
    /// Explicit permissions, comma-separated; with --role, they must be within the role's.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    permissions: Option<Vec<String>>,
    /// Expire this many seconds after creation (default: never).
    #[arg(long, value_name = "SECONDS")]
    expires_in: Option<u64>,
    /// Client networks the token may be used from, comma-separated CIDR
    /// (e.g. 10.0.0.0/8,2001:db8::/32); default: any address.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    allowed_ips: Option<Vec<String>>,
    /// The token's own rate limit, in requests per minute (only ever lowers the server's).
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// The owner's own data about the token: a JSON object of at most 1 KiB
    /// (e.g. '{"team":"payments","ticket":42}').
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct TokenRef {
    /// The owning account's email.
    #[arg(long)]
    owner: String,
    /// The token's id (as shown by `keygate token list`).
    id: String,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct TokenRevoke {
    #[command(flatten)]
    token: TokenRef,
    /// Revoke this token only, not the tokens that replaced it by rotation.
    #[arg(long)]
    keep_successors: bool,
}

#[derive(Debug, Args)]
struct TokenRotate {
    #[command(flatten)]
    token: TokenRef,
    /// How long the old token keeps working, in seconds (at most 86400).
    #[arg(long, default_value_t = 0, value_name = "N")]
    grace_seconds: u64,
}

/// A failure, with the exit status it maps to.
#[derive(Debug)]
enum Failure {
    /// Exit 1.
    Usage(String),
    /// Exit 2.
    NotFound(String),
    /// Exit 3.
    Store(String, Option<Box<dyn std::error::Error + Send + Sync>>),
}

impl Failure {
    fn store(context: &str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Store(context.to_owned(), Some(Box::new(e)))
    }

    fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 1,
            Self::NotFound(_) => 2,
            Self::Store(..) => 3,
        }
    }

    fn report(&self) -> String {
        match self {
            Self::Usage(m) | Self::NotFound(m) => format!("keygate: error: {m}"),
            Self::Store(m, source) => {
                let mut out = format!("keygate: store error: {m}");
                let mut next: Option<&(dyn std::error::Error + 'static)> = match source {
                    Some(e) => Some(e.as_ref()),
                    None => None,
                };
                while let Some(e) = next {
                    let _ = write!(out, ": {e}");
                    next = e.source();
                }
                out
            }
        }
    }
}

fn token_failure(e: TokenError, owner: &str, id: Option<TokenId>) -> Failure {
    match e {
        TokenError::NotFound => Failure::NotFound(match id {
            Some(id) => format!("no live token {id} owned by {owner}"),
            None => format!("no such token owned by {owner}"),
        }),
        TokenError::NameTaken => Failure::Usage(format!(
            "{owner} already has a live token with this name; pick another --name"
        )),
        TokenError::LimitReached => Failure::Usage(format!(
            "{owner} has reached the limit of live tokens; revoke one first"
        )),
        TokenError::Store(e) => Failure::store("the token store failed", e),
        other @ (TokenError::InvalidName(_)
        | TokenError::InvalidDescription(_)
        | TokenError::InvalidOwner(_)
        | TokenError::UnknownRole(_)
        | TokenError::UnknownKind(_)
        | TokenError::PermissionsExceedRole
        | TokenError::PermissionsWiden
        | TokenError::InvalidExpiry(_)
        | TokenError::InvalidAllowedIps(_)
        | TokenError::InvalidRateLimit(_)
        | TokenError::GraceTooLong { .. }) => Failure::Usage(other.to_string()),
        other => Failure::store("the token manager failed", other),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let loaded = config(&cli);
    // `keygate serve` with JSON logs reports a failure as JSON lines too.
    let json = matches!(cli.command, Command::Serve(_))
        && match &loaded {
            Ok(config) => config.log_format == LogFormat::Json,
            Err(_) => matches!(LogFormat::from_env(), Ok(LogFormat::Json)),
        };
    let result = loaded.and_then(|config| match cli.command {
        Command::Serve(_) => serve::run(config),
        command => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run(command, config)),
            Err(e) => Err(Failure::store("cannot start the async runtime", e)),
        },
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) if json => {
            for line in f.report().lines() {
                eprintln!(
                    "{}",
                    serde_json::json!({ "level": "ERROR", "message": line })
                );
            }
            ExitCode::from(f.exit_code())
        }
        Err(f) => {
            eprintln!("{}", f.report());
            ExitCode::from(f.exit_code())
        }
    }
}

/// The settings: flags, then the environment, then the `--config` file, then the defaults.
fn config(cli: &Cli) -> Result<Config, Failure> {
    // An empty KEYGATE_CONFIG is no file, as an empty variable is no value.
    let file = cli.config.clone().filter(|p| !p.as_os_str().is_empty());
    let mut loader = Config::loader().with_file(file);
    loader = cli.database.apply(loader);
    if let Command::Serve(args) = &cli.command {
        loader = args.settings.apply(loader);
    }
    loader.load().map_err(|e| {
        Failure::Usage(
            e.problems()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\nkeygate: error: "),
        )
    })
}

/// The opened database: one store for tokens and accounts.
struct Backend {
    tokens: Arc<dyn TokenStore>,
    accounts: Arc<dyn AccountStore>,
}

async fn run(command: Command, config: Config) -> Result<(), Failure> {
    let backend = open(&config).await?;
    match command {
        Command::Serve(_) => Ok(()),
        Command::User(UserCommand::Add(args)) => {
            user_add(backend.accounts.as_ref(), &config.roles, args).await
        }
        Command::Token(cmd) => {
            let tokens = config
                .with_pepper(
                    config
                        .kinds
                        .iter()
                        .fold(Tokens::builder(backend.tokens.clone()), |b, kind| {
                            b.kind(kind.clone())
                        }),
                )
                .roles(config.roles.clone())
                .build()
                .map_err(|e| Failure::Usage(format!("invalid configuration: {e}")))?;
            match cmd {
                TokenCommand::Create(args) => {
                    token::token_create(backend.accounts.as_ref(), &tokens, args).await
                }
                TokenCommand::List(args) => token::token_list(&tokens, args).await,
                TokenCommand::Update(args) => token::token_update(&tokens, args).await,
                TokenCommand::Revoke(args) => token::token_revoke(&tokens, args).await,
                TokenCommand::Rotate(args) => token::token_rotate(&tokens, args).await,
                TokenCommand::Release(args) => token::token_release(&tokens, args).await,
                TokenCommand::Import(args) => import::token_import(&tokens, args).await,
                TokenCommand::Lookup(args) => token::token_lookup(&tokens, args).await,
            }
        }
    }
}

async fn open(config: &Config) -> Result<Backend, Failure> {
    let failure = |e: OpenError| match e {
        OpenError::Sqlite { path, source } => {
            Failure::store(&format!("cannot open the database {path:?}"), source)
        }
        // The URL may hold a password: it is never printed.
        OpenError::Postgres(source) => {
            Failure::store("cannot open the PostgreSQL database", source)
        }
        other => Failure::Usage(other.to_string()),
    };
    let database = config.database().map_err(failure)?;
    // A short-lived program beside a running server: a small pool, a bounded wait.
    let options = OpenOptions::new()
        .with_schema(config.db_schema.clone())
        .with_migrations(config.migrate)
        .with_small_pool(2, Duration::from_secs(5));
    Ok(match database.open(&options).await.map_err(failure)? {
        OpenedStore::Sqlite(store) => Backend {
            tokens: Arc::new(store.clone()),
            accounts: Arc::new(store),
        },
        OpenedStore::Postgres(store) => Backend {
            tokens: Arc::new(store.clone()),
            accounts: Arc::new(store),
        },
        _ => return Err(Failure::Usage("this database is not supported here".into())),
    })
}

fn normalise_email(email: &str) -> Result<String, Failure> {
    bootstrap::normalise_email(email).map_err(|e| Failure::Usage(e.to_string()))
}

fn parse_permissions(list: &[String]) -> Result<Permissions, Failure> {
    Permissions::parse(list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()))
        .map_err(|e| Failure::Usage(format!("invalid --permissions: {e}")))
}

fn role_permissions(roles: &Roles, role: &str) -> Result<Permissions, Failure> {
    roles.get(role).cloned().ok_or_else(|| {
        let known: Vec<&str> = roles.names().collect();
        Failure::Usage(format!(
            "unknown role {role:?}; known roles: {}",
            known.join(", ")
        ))
    })
}

fn show_permissions(p: &Permissions) -> String {
    if p.is_empty() {
        return "(none)".into();
    }
    p.iter()
        .map(keygate::Permission::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn read_password() -> Result<String, Failure> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Password (one line):");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::Usage(format!("cannot read the password from stdin: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.chars().count() < 8 {
        return Err(Failure::Usage(
            "the password must be at least 8 characters".into(),
        ));
    }
    Ok(password)
}

async fn user_add(store: &dyn AccountStore, roles: &Roles, args: UserAdd) -> Result<(), Failure> {
    let email = normalise_email(&args.email)?;
    let permissions = match (&args.permissions, &args.role) {
        (Some(list), _) => parse_permissions(list)?,
        (None, Some(role)) => role_permissions(roles, role)?,
        (None, None) => role_permissions(roles, "viewer")?,
    };
    let generated = !args.password_stdin;
    let password = if generated {
        bootstrap::generate_password()
    } else {
        zeroize::Zeroizing::new(read_password()?)
    };
    bootstrap::add_account(store, &email, &password, permissions.clone())
        .await
        .map_err(|e| match e {
            AddAccountError::Exists(_) | AddAccountError::Hash(_) => Failure::Usage(e.to_string()),
            AddAccountError::Read(e) => Failure::store("cannot read accounts", e),
            AddAccountError::Write(e) => Failure::store("cannot save the account", e),
            other => Failure::store("cannot add the account", other),
        })?;
    if args.output.json {
        let mut out = serde_json::json!({ "account": email, "permissions": permissions });
        if generated {
            // Shown this once; only its argon2id hash is stored.
            out["password"] = serde_json::Value::from(password.as_str());
        }
        println!("{out}");
    } else {
        println!("account:     {email}");
        println!("permissions: {}", show_permissions(&permissions));
        if generated {
            // Shown on stdout this once; only its argon2id hash is stored.
            println!("password:    {}", password.as_str());
        }
    }
    if generated {
        eprintln!("Copy the password now: it is not shown again.");
    }
    Ok(())
}
