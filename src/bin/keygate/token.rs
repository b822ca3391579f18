//! The `token` commands.

use std::fmt::Write as _;
use std::time::Duration;

use keygate::accounts::{Account, AccountStore};
use keygate::axum::management::TokenView;
use keygate::store::ReleaseOutcome;
use keygate::{IssuedToken, NewToken, TokenError, TokenId, TokenRecord, Tokens};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{
    Failure, TokenCreate, TokenList, TokenRef, TokenRevoke, TokenRotate, normalise_email,
    parse_permissions, role_permissions, show_permissions, token_failure,
};

/// A token as `--json` shows it: the management API's view (never the hash), with its kind
/// and, when revoked, since when; the token itself only when `secret` is given.
fn view(record: &TokenRecord, now: OffsetDateTime, secret: Option<&str>) -> Value {
    let mut view = TokenView::from_record(record, now);
    view.token = secret.map(str::to_owned);
    let mut out = serde_json::to_value(&view).unwrap_or(Value::Null);
    out["kind"] = json!(record.kind);
    if let Some(at) = record.revoked_at {
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

pub(super) async fn token_list(tokens: &Tokens, args: TokenList) -> Result<(), Failure> {
    let owner = normalise_email(&args.owner)?;
    let records = tokens
        .list(&owner)
        .await
        .map_err(|e| token_failure(e, &owner, None))?;
    if args.output.json {
        let now = tokens.now();
        let all: Vec<Value> = records.iter().map(|r| view(r, now, None)).collect();
        println!("{}", Value::Array(all));
        return Ok(());
    }
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
