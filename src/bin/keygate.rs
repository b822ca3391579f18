//! The `keygate` command-line tool (feature `cli`): manage accounts and API tokens in a
//! keygate SQLite database, e.g. beside a running server.
//!
//! ```text
//! keygate user add alice@example.com --role deployer
//! keygate token create --owner alice@example.com --name ci --role cicd --expires-in 7776000
//! keygate token list --owner alice@example.com
//! keygate token rotate --owner alice@example.com <id> --grace-seconds 3600
//! keygate token revoke --owner alice@example.com <id>     # and the tokens that replaced it
//! ```
//!
//! The database is named by `KEYGATE_DB` (or `--db`): a SQLite file path (`keygate.db` by
//! default), or a `postgres://` URL when built with the `postgres` feature.
//! A token is printed once, when it is created or rotated; only its SHA-256 is stored.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keygate::accounts::{Account, AccountStore, hash_password};
use keygate::store::ReleaseOutcome;
use keygate::store::sqlite::SqliteStore;
use keygate::{IssuedToken, NewToken, Permissions, Roles, TokenError, TokenId, TokenStore, Tokens};
use rand::Rng;
use time::OffsetDateTime;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  usage or validation error (bad arguments, invalid name or permissions, name taken,
     token limit reached, account already exists, a postgres:// URL in a build without
     the `postgres` feature)
  2  not found (unknown account, or no such token of this owner)
  3  store error (the database cannot be opened, read or written)";

/// Manage keygate accounts and API tokens.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, after_help = EXIT_CODES)]
struct Cli {
    /// The database: a SQLite file (created if missing), or a `postgres://` URL (needs the
    /// `postgres` feature).
    #[arg(
        long,
        env = "KEYGATE_DB",
        default_value = "keygate.db",
        global = true,
        value_name = "PATH|URL"
    )]
    db: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage accounts (the owners of tokens).
    #[command(subcommand, after_help = EXIT_CODES)]
    User(UserCommand),
    /// Create, list, rotate and revoke API tokens.
    #[command(subcommand, after_help = EXIT_CODES)]
    Token(TokenCommand),
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
    /// A role whose permissions the account gets: viewer, ops, deployer, cicd or admin.
    #[arg(long)]
    role: Option<String>,
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
    List(OwnerArg),
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
}

#[derive(Debug, Args)]
struct OwnerArg {
    /// The owning account's email.
    #[arg(long)]
    owner: String,
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
    /// Take the permissions of a role: viewer, ops, deployer, cicd or admin.
    #[arg(long)]
    role: Option<String>,
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
}

#[derive(Debug, Args)]
struct TokenRef {
    /// The owning account's email.
    #[arg(long)]
    owner: String,
    /// The token's id (as shown by `keygate token list`).
    id: String,
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("{}", f.report());
            ExitCode::from(f.exit_code())
        }
    }
}

/// The opened database: one store for tokens and accounts.
struct Backend {
    tokens: Arc<dyn TokenStore>,
    accounts: Arc<dyn AccountStore>,
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let backend = open(&cli.db).await?;
    match cli.command {
        Command::User(UserCommand::Add(args)) => user_add(backend.accounts.as_ref(), args).await,
        Command::Token(cmd) => {
            let tokens = Tokens::builder(backend.tokens.clone())
                .roles(Roles::deployment_platform())
                .build()
                .map_err(|e| Failure::Usage(format!("invalid configuration: {e}")))?;
            match cmd {
                TokenCommand::Create(args) => {
                    token_create(backend.accounts.as_ref(), &tokens, args).await
                }
                TokenCommand::List(args) => token_list(&tokens, &args.owner).await,
                TokenCommand::Revoke(args) => token_revoke(&tokens, args).await,
                TokenCommand::Rotate(args) => token_rotate(&tokens, args).await,
                TokenCommand::Release(args) => token_release(&tokens, args).await,
            }
        }
    }
}

fn is_postgres_url(db: &str) -> bool {
    let lower = db.to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

async fn open(db: &str) -> Result<Backend, Failure> {
    if is_postgres_url(db) {
        return open_postgres(db).await;
    }
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .unwrap_or(db);
    if path.is_empty() {
        return Err(Failure::Usage("the database path is empty".into()));
    }
    let store = SqliteStore::open(path)
        .await
        .map_err(|e| Failure::store(&format!("cannot open the database {path:?}"), e))?;
    Ok(Backend {
        tokens: Arc::new(store.clone()),
        accounts: Arc::new(store),
    })
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Backend, Failure> {
    use keygate::store::postgres::PostgresOptions;

    // The URL may hold a password: it is never printed.
    let store = PostgresOptions::new(url)
        .with_max_connections(2)
        .with_acquire_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| Failure::store("cannot open the PostgreSQL database", e))?;
    Ok(Backend {
        tokens: Arc::new(store.clone()),
        accounts: Arc::new(store),
    })
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str) -> Result<Backend, Failure> {
    Err(Failure::Usage(
        "KEYGATE_DB is a PostgreSQL URL, but this keygate was built without the `postgres` \
         feature; rebuild with `--features cli,postgres`, or point KEYGATE_DB (or --db) at a \
         SQLite file"
            .into(),
    ))
}

fn normalise_email(email: &str) -> Result<String, Failure> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(Failure::Usage(format!("{email:?} is not a valid email")))
    }
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

fn generate_password() -> String {
    rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
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

async fn user_add(store: &dyn AccountStore, args: UserAdd) -> Result<(), Failure> {
    let email = normalise_email(&args.email)?;
    let roles = Roles::deployment_platform();
    let permissions = match (&args.permissions, &args.role) {
        (Some(list), _) => parse_permissions(list)?,
        (None, Some(role)) => role_permissions(&roles, role)?,
        (None, None) => role_permissions(&roles, "viewer")?,
    };
    let generated = !args.password_stdin;
    let password = if generated {
        generate_password()
    } else {
        read_password()?
    };
    if store
        .find_account(&email)
        .await
        .map_err(|e| Failure::store("cannot read accounts", e))?
        .is_some()
    {
        return Err(Failure::Usage(format!(
            "the account {email} already exists"
        )));
    }
    let to_hash = password.clone();
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&to_hash))
        .await
        .map_err(|e| Failure::store("password hashing stopped", e))?
        .map_err(|e| Failure::Usage(format!("cannot hash this password: {e}")))?;
    let account = Account {
        email: email.clone(),
        password_hash,
        permissions: permissions.clone(),
        created_at: OffsetDateTime::now_utc(),
    };
    store
        .put_account(account)
        .await
        .map_err(|e| Failure::store("cannot save the account", e))?;
    println!("account:     {email}");
    println!("permissions: {}", show_permissions(&permissions));
    if generated {
        // Shown on stdout this once; only its argon2id hash is stored.
        println!("password:    {password}");
        eprintln!("Copy the password now: it is not shown again.");
    }
    Ok(())
}

async fn account(store: &dyn AccountStore, owner: &str) -> Result<Account, Failure> {
    store
        .find_account(owner)
        .await
        .map_err(|e| Failure::store("cannot read accounts", e))?
        .ok_or_else(|| {
            Failure::NotFound(format!(
                "no account {owner}; add it first with `keygate user add {owner}`"
            ))
        })
}

fn print_issued(issued: &IssuedToken) {
    let r = &issued.record;
    println!("token:       {}", issued.token.expose_secret());
    println!("id:          {}", r.id);
    println!("name:        {}", r.name);
    println!("hint:        {}", r.hint);
    println!("permissions: {}", show_permissions(&r.permissions));
    println!(
        "expires:     {}",
        r.expires_at.map_or_else(|| "never".into(), rfc3339)
    );
    eprintln!("Copy the token now: it is not shown again.");
}

async fn token_create(
    store: &dyn AccountStore,
    tokens: &Tokens,
    args: TokenCreate,
) -> Result<(), Failure> {
    let owner = normalise_email(&args.owner)?;
    let account = account(store, &owner).await?;
    let explicit = args
        .permissions
        .as_deref()
        .map(parse_permissions)
        .transpose()?;
    let from_role = args
        .role
        .as_deref()
        .map(|r| role_permissions(tokens.roles(), r))
        .transpose()?;
    let effective = match (&explicit, &from_role) {
        (Some(p), _) | (None, Some(p)) => p.clone(),
        (None, None) => account.permissions.clone(),
    };
    if !effective.is_subset_of(&account.permissions) {
        return Err(Failure::Usage(format!(
            "the token's permissions ({}) go beyond those of the account {owner} ({})",
            show_permissions(&effective),
            show_permissions(&account.permissions)
        )));
    }
    let mut new = NewToken::new(&owner, args.name).created_by("keygate-cli");
    if let Some(d) = args.description {
        new = new.description(d);
    }
    if let Some(r) = args.role {
        new = new.role(r);
    }
    if explicit.is_some() || from_role.is_none() {
        new = new.permissions(effective);
    }
    if let Some(s) = args.expires_in {
        new = new.expires_in(Duration::from_secs(s));
    }
    if let Some(list) = &args.allowed_ips {
        let nets = list
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        Failure::Usage(format!(
                            "--allowed-ips: {s:?} is not an IP network in CIDR notation (e.g. 10.0.0.0/8)"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        new = new.allowed_ips(nets);
    }
    if let Some(n) = args.rate_limit {
        new = new.rate_limit_per_minute(n);
    }
    let issued = tokens
        .issue(new)
        .await
        .map_err(|e| token_failure(e, &owner, None))?;
    print_issued(&issued);
    Ok(())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_else(|_| t.to_string())
}

async fn token_list(tokens: &Tokens, owner: &str) -> Result<(), Failure> {
    let owner = normalise_email(owner)?;
    let records = tokens
        .list(&owner)
        .await
        .map_err(|e| token_failure(e, &owner, None))?;
    if records.is_empty() {
        eprintln!("{owner} has no tokens.");
        return Ok(());
    }
    let now = tokens.now();
    let header = [
        "ID",
        "NAME",
        "HINT",
        "STATUS",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "PERMISSIONS",
    ];
    let rows: Vec<[String; 8]> = records
        .iter()
        .map(|r| {
            let status = if r.revoked_at.is_some() {
                "revoked"
            } else if !r.is_valid_at(now) {
                "expired"
            } else if r.replaced_by.is_some() {
                "rotated"
            } else {
                "active"
            };
            [
                r.id.to_string(),
                r.name.clone(),
                r.hint.clone(),
                status.to_owned(),
                rfc3339(r.created_at),
                r.expires_at.map_or_else(|| "never".into(), rfc3339),
                r.last_used_at.map_or_else(|| "never".into(), rfc3339),
                show_permissions(&r.permissions),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        println!("{}", out.trim_end());
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    Ok(())
}

fn parse_id(id: &str) -> Result<TokenId, Failure> {
    id.trim()
        .parse()
        .map_err(|_| Failure::Usage(format!("{id:?} is not a token id (a UUID)")))
}

async fn token_revoke(tokens: &Tokens, args: TokenRevoke) -> Result<(), Failure> {
    let owner = normalise_email(&args.token.owner)?;
    let id = parse_id(&args.token.id)?;
    let failure = |e| token_failure(e, &owner, Some(id));
    if args.keep_successors {
        tokens
            .revoke_keeping_successors(&owner, id)
            .await
            .map_err(failure)?;
        println!("revoked {id}");
        return Ok(());
    }
    let successors = tokens
        .revoke_with_successors(&owner, id)
        .await
        .map_err(failure)?;
    println!("revoked {id}");
    for s in successors {
        println!("revoked {s} (a successor of {id} by rotation)");
    }
    Ok(())
}

async fn token_release(tokens: &Tokens, args: TokenRef) -> Result<(), Failure> {
    let owner = normalise_email(&args.owner)?;
    let id = parse_id(&args.id)?;
    // The CLI does not know which kinds the server binds: release whatever binding the
    // record holds, with the same once-per-24-hours rule.
    let record = tokens
        .get(&owner, id)
        .await
        .map_err(|e| token_failure(e, &owner, Some(id)))?;
    if !record.is_valid_at(tokens.now()) {
        return Err(token_failure(TokenError::NotFound, &owner, Some(id)));
    }
    let outcome = tokens
        .store()
        .release(&id, tokens.now(), keygate::tokens::RELEASE_INTERVAL)
        .await
        .map_err(|e| Failure::store("the token store failed", e))?;
    match outcome {
        ReleaseOutcome::Released => {
            println!("released {id}: the next machine to use it takes the seat")
        }
        ReleaseOutcome::NotBound => println!("{id} is not bound to a machine; nothing to release"),
        ReleaseOutcome::TooSoon { next_allowed_at } => {
            return Err(Failure::Usage(format!(
                "{id} was released less than 24 hours ago; next release allowed at {}",
                rfc3339(next_allowed_at)
            )));
        }
    }
    Ok(())
}

async fn token_rotate(tokens: &Tokens, args: TokenRotate) -> Result<(), Failure> {
    let owner = normalise_email(&args.token.owner)?;
    let id = parse_id(&args.token.id)?;
    let grace = Duration::from_secs(args.grace_seconds);
    let issued = tokens
        .rotate(&owner, id, Some(grace))
        .await
        .map_err(|e| token_failure(e, &owner, Some(id)))?;
    print_issued(&issued);
    if args.grace_seconds == 0 {
        println!("replaced:    {id} (stopped working now)");
    } else {
        println!(
            "replaced:    {id} (works until {})",
            rfc3339(issued.record.created_at + grace)
        );
    }
    Ok(())
}
