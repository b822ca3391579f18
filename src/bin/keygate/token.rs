//! The `token` commands.

use std::fmt::Write as _;
use std::time::Duration;

use keygate::accounts::{Account, AccountStore};
use keygate::axum::management::TokenView;
use keygate::record::Metadata;
use keygate::store::ReleaseOutcome;
use keygate::{IssuedToken, NewToken, TokenError, TokenId, TokenRecord, Tokens};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{
    Failure, TokenCreate, TokenList, TokenLookup, TokenRef, TokenRevoke, TokenRotate, TokenUpdate,
    normalise_email, parse_permissions, role_permissions, show_permissions, token_failure,
};

/// A token as `--json` shows it: the management API's view (never the hash), with its kind
/// and, when revoked, since when; the token itself only when `secret` is given.
fn view(record: &TokenRecord, now: OffsetDateTime, secret: Option<&str>) -> Value {
    let mut view = TokenView::from_record(record, now);
    view.token = secret.map(str::to_owned);
    let mut out = serde_json::to_value(&view).unwrap_or(Value::Null);
    out["kind"] = json!(record.kind);
    if let Some(at) = record.extras().revoked_at {
        out["status"] = json!("revoked");
        out["revoked_at"] = json!(rfc3339(at));
    }
    out
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
    println!("kind:        {}", r.kind);
    println!("id:          {}", r.id);
    println!("name:        {}", r.name);
    println!("hint:        {}", r.hint);
    println!("permissions: {}", show_permissions(&r.permissions));
    if !r.extras().metadata.is_empty() {
        println!("metadata:    {}", r.extras().metadata.to_json());
    }
    println!(
        "expires:     {}",
        r.expires_at.map_or_else(|| "never".into(), rfc3339)
    );
    eprintln!("Copy the token now: it is not shown again.");
}

pub(super) async fn token_create(
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
    let role = match args.role {
        Some(r) => {
            let p = role_permissions(tokens.roles(), &r)?;
            Some((r, p))
        }
        None => None,
    };
    let grant = account.grant(role, explicit).map_err(|e| {
        Failure::Usage(format!(
            "the token's permissions ({}) go beyond those of the account {owner} ({})",
            show_permissions(&e.wanted),
            show_permissions(&account.permissions)
        ))
    })?;
    let mut new = NewToken::new(&owner, args.name).created_by("keygate-cli");
    if let Some(kind) = args.kind {
        if tokens.kind(&kind).is_none() {
            let known: Vec<&str> = tokens.kinds().iter().map(|k| k.name()).collect();
            return Err(Failure::Usage(format!(
                "unknown token kind {kind:?}; known kinds: {}",
                known.join(", ")
            )));
        }
        new = new.kind(kind);
    }
    if let Some(d) = args.description {
        new = new.description(d);
    }
    new = grant.apply(new);
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
    if let Some(text) = &args.metadata {
        let meta = Metadata::from_json(text).map_err(|e| Failure::Usage(format!("--{e}")))?;
        new = new.metadata(meta);
    }
    let issued = tokens
        .issue(new)
        .await
        .map_err(|e| token_failure(e, &owner, None))?;
    if args.output.json {
        let out = view(
            &issued.record,
            tokens.now(),
            Some(issued.token.expose_secret()),
        );
        println!("{out}");
        eprintln!("Copy the token now: it is not shown again.");
    } else {
        print_issued(&issued);
    }
    Ok(())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_else(|_| t.to_string())
}

/// Every record the admin view selects, page after page.
async fn list_all(tokens: &Tokens, args: &TokenList) -> Result<Vec<TokenRecord>, Failure> {
    let now = tokens.now();
    let mut query = keygate::store::TokenQuery::new(now, 1000);
    if let Some(o) = &args.owner {
        query = query.with_owner(normalise_email(o)?);
    }
    if let Some(k) = &args.kind {
        query = query.with_kind(k.clone());
    }
    if let Some(s) = &args.status {
        query = query.with_status(s.parse().map_err(|_| {
            Failure::Usage(format!(
                "--status must be active, expired, revoked or replaced, not {s:?}"
            ))
        })?);
    }
    let mut out = Vec::new();
    loop {
        let page = tokens
            .list_all(&query)
            .await
            .map_err(|e| token_failure(e, "any owner", None))?;
        let Some(last) = page.last() else { break };
        query = query.with_after(last.created_at, last.id);
        let full = page.len() == query.limit;
        out.extend(page);
        if !full {
            break;
        }
    }
    Ok(out)
}

pub(super) async fn token_update(tokens: &Tokens, args: TokenUpdate) -> Result<(), Failure> {
    let owner = normalise_email(&args.token.owner)?;
    let id = parse_id(&args.token.id)?;
    let mut changes = keygate::tokens::TokenChanges::new();
    if let Some(n) = args.name {
        changes = changes.name(n);
    }
    if let Some(d) = args.description {
        changes = changes.description(Some(d));
    }
    if args.clear_description {
        changes = changes.description(None);
    }
    if let Some(s) = args.expires_in {
        changes = changes.expires_in(Duration::from_secs(s));
    }
    if args.no_expiry {
        changes = changes.expires_at(None);
    }
    if let Some(m) = &args.metadata {
        let m = keygate::record::Metadata::from_json(m)
            .map_err(|e| Failure::Usage(format!("--metadata: {e}")))?;
        changes = changes.metadata(m);
    }
    if let Some(p) = &args.permissions {
        changes = changes.permissions(parse_permissions(p)?);
    }
    if changes.fields().is_empty() {
        return Err(Failure::Usage(
            "nothing to change: give --name, --description, --clear-description, \
             --expires-in, --no-expiry, --metadata or --permissions"
                .into(),
        ));
    }
    let record = tokens
        .update(&owner, id, changes)
        .await
        .map_err(|e| token_failure(e, &owner, Some(id)))?;
    if args.token.output.json {
        println!("{}", view(&record, tokens.now(), None));
    } else {
        println!("updated {id}");
        println!("name:        {}", record.name);
        println!(
            "description: {}",
            record.extras().description.as_deref().unwrap_or("-")
        );
        println!(
            "expires:     {}",
            record.expires_at.map_or_else(|| "never".into(), rfc3339)
        );
        println!("permissions: {}", show_permissions(&record.permissions));
        println!("metadata:    {}", record.extras().metadata.to_json());
    }
    Ok(())
}

pub(super) async fn token_list(tokens: &Tokens, args: TokenList) -> Result<(), Failure> {
    let (owner, records) = if args.all {
        ("any owner".to_owned(), list_all(tokens, &args).await?)
    } else {
        let owner = normalise_email(args.owner.as_deref().unwrap_or_default())?;
        let records = tokens
            .list(&owner)
            .await
            .map_err(|e| token_failure(e, &owner, None))?;
        (owner, records)
    };
    if args.output.json {
        let now = tokens.now();
        let all: Vec<Value> = records.iter().map(|r| view(r, now, None)).collect();
        println!("{}", Value::Array(all));
        return Ok(());
    }
    if records.is_empty() {
        if args.all {
            eprintln!("No tokens.");
        } else {
            eprintln!("{owner} has no tokens.");
        }
        return Ok(());
    }
    let now = tokens.now();
    let header = [
        "ID",
        if args.all { "OWNER / NAME" } else { "NAME" },
        "HINT",
        "STATUS",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "LAST CLIENT",
        "PERMISSIONS",
        "METADATA",
    ];
    let rows: Vec<[String; 10]> = records
        .iter()
        .map(|r| {
            let status = if r.extras().revoked_at.is_some() {
                "revoked"
            } else if !r.is_valid_at(now) {
                "expired"
            } else if r.extras().replaced_by.is_some() {
                "rotated"
            } else {
                "active"
            };
            [
                r.id.to_string(),
                if args.all {
                    format!("{} / {}", r.owner, r.name)
                } else {
                    r.name.to_string()
                },
                r.hint.to_string(),
                status.to_owned(),
                rfc3339(r.created_at),
                r.expires_at.map_or_else(|| "never".into(), rfc3339),
                r.last_used_at.map_or_else(|| "never".into(), rfc3339),
                last_client(r),
                show_permissions(&r.permissions),
                if r.extras().metadata.is_empty() {
                    "-".to_owned()
                } else {
                    r.extras().metadata.to_json()
                },
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

/// The address and agent of the last use: `192.0.2.7 (curl/8.5.0)`, `-` when unknown.
fn last_client(r: &TokenRecord) -> String {
    match (
        r.extras().last_used_ip,
        r.extras().last_used_agent.as_deref(),
    ) {
        (Some(ip), Some(agent)) => format!("{ip} ({agent})"),
        (Some(ip), None) => ip.to_string(),
        (None, Some(agent)) => format!("({agent})"),
        (None, None) => "-".to_owned(),
    }
}

fn parse_id(id: &str) -> Result<TokenId, Failure> {
    id.trim()
        .parse()
        .map_err(|_| Failure::Usage(format!("{id:?} is not a token id (a UUID)")))
}

pub(super) async fn token_revoke(tokens: &Tokens, args: TokenRevoke) -> Result<(), Failure> {
    let owner = normalise_email(&args.token.owner)?;
    let id = parse_id(&args.token.id)?;
    let failure = |e| token_failure(e, &owner, Some(id));
    let successors = if args.keep_successors {
        tokens
            .revoke_keeping_successors(&owner, id)
            .await
            .map_err(failure)?;
        Vec::new()
    } else {
        tokens
            .revoke_with_successors(&owner, id)
            .await
            .map_err(failure)?
    };
    if args.token.output.json {
        println!(
            "{}",
            json!({ "revoked": id, "successors_revoked": successors })
        );
        return Ok(());
    }
    println!("revoked {id}");
    for s in successors {
        println!("revoked {s} (a successor of {id} by rotation)");
    }
    Ok(())
}

pub(super) async fn token_release(tokens: &Tokens, args: TokenRef) -> Result<(), Failure> {
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
    let json = args.output.json;
    match outcome {
        ReleaseOutcome::Released if json => println!("{}", json!({ "id": id, "released": true })),
        ReleaseOutcome::Released => {
            println!("released {id}: the next machine to use it takes the seat")
        }
        ReleaseOutcome::NotBound if json => {
            println!("{}", json!({ "id": id, "released": false, "bound": false }))
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

pub(super) async fn token_rotate(tokens: &Tokens, args: TokenRotate) -> Result<(), Failure> {
    let owner = normalise_email(&args.token.owner)?;
    let id = parse_id(&args.token.id)?;
    let grace = Duration::from_secs(args.grace_seconds);
    let issued = tokens
        .rotate(&owner, id, Some(grace))
        .await
        .map_err(|e| token_failure(e, &owner, Some(id)))?;
    if args.token.output.json {
        let mut out = view(
            &issued.record,
            tokens.now(),
            Some(issued.token.expose_secret()),
        );
        out["replaces"] = json!({
            "id": id,
            "expires_at": rfc3339(issued.record.created_at + grace),
        });
        println!("{out}");
        eprintln!("Copy the token now: it is not shown again.");
        return Ok(());
    }
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

/// Reads a token from standard input: the first line, trimmed. Zeroized when dropped.
fn read_token() -> Result<zeroize::Zeroizing<String>, Failure> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::Usage(format!("cannot read the token from stdin: {e}")))?;
    let token = zeroize::Zeroizing::new(line.trim().to_owned());
    if token.is_empty() {
        return Err(Failure::Usage(
            "no token on standard input; e.g. `keygate token lookup < token.txt`".into(),
        ));
    }
    Ok(token)
}

pub(super) async fn token_lookup(tokens: &Tokens, args: TokenLookup) -> Result<(), Failure> {
    if args.token.is_some() {
        return Err(Failure::Usage(
            "the token is read from standard input, never from the command line (arguments \
             are kept in shell history and shown by `ps`): run `keygate token lookup` and \
             paste it, or `keygate token lookup < file`"
                .into(),
        ));
    }
    let token = read_token()?;
    let record = tokens
        .find_by_token(&token)
        .await
        .map_err(|e| token_failure(e, "anyone", None))?
        .ok_or_else(|| Failure::NotFound("no token has this value".into()))?;
    let now = tokens.now();
    if args.output.json {
        println!("{}", view(&record, now, None));
        return Ok(());
    }
    let status = record.status_at(now);
    println!("id:        {}", record.id);
    println!("owner:     {}", record.owner);
    println!("name:      {}", record.name);
    println!("kind:      {}", record.kind);
    println!("status:    {}", status.as_str());
    println!("hint:      {}", record.hint);
    println!("created:   {}", rfc3339(record.created_at));
    println!(
        "last used: {}",
        record.last_used_at.map_or_else(|| "never".into(), rfc3339)
    );
    println!(
        "expires:   {}",
        record.expires_at.map_or_else(|| "never".into(), rfc3339)
    );
    if let Some(at) = record.extras().revoked_at {
        println!("revoked:   {}", rfc3339(at));
    }
    Ok(())
}
